// One decoding step of a Llama-style layer for a single sequence, as one call.
//
// Decoding one token is a string of matrix-vector products over weights that are read once each, plus some
// forty small operations per layer. PyTorch runs each small operation as its own dispatched kernel, which
// costs more than the arithmetic; its matrix-vector products also stream the weights well below the memory
// bandwidth. Here a layer is a handful of loops: the products split their rows over PyTorch's own thread
// pool (at::parallel_for), everything else runs in place on buffers of a few kilobytes.
//
// Weights are float32, bfloat16, int8 with one float32 scale per output row, or int4 in groups of 32 (see
// Int4 below); activations are float32; the key/value cache is float32 or bfloat16. Loops are plain C++ that
// the compiler vectorizes (`omp simd`, -O3 -march=native), except the weight rows' inner loops, which have an
// AVX-512 version because the compiler widens int8 and bfloat16 poorly. Built with -fopenmp, since
// at::parallel_for is inline code over OpenMP pragmas that would otherwise run on one thread.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

namespace {

inline float as_float(float v) { return v; }
inline float as_float(c10::BFloat16 v) { return static_cast<float>(v); }
inline float as_float(int8_t v) { return static_cast<float>(v); }

template <typename T>
inline float dot(const T* w, const float* x, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += as_float(w[i]) * x[i];
  return sum;
}

// A weight matrix (rows, cols), row-major, with its optional per-row scale (int8) and bias.
struct Matrix {
  const void* data;
  const float* scale;
  const float* bias;
  int64_t rows, cols;
};

Matrix matrix(const at::Tensor& weight, const c10::optional<at::Tensor>& scale, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "decode_layer: weights must be contiguous 2-D tensors");
  const float* scale_data = scale && scale->defined() ? scale->data_ptr<float>() : nullptr;
  const float* bias_data = bias && bias->defined() ? bias->data_ptr<float>() : nullptr;
  bool int4 = weight.scalar_type() == at::kByte;  // two weights per byte
  TORCH_CHECK(!int4 || (scale_data && scale->is_contiguous() && scale->numel() == weight.numel() / 8),
              "decode_layer: int4 weights need contiguous (rows, cols / 32, 2) scales and minimums");
  return {weight.data_ptr(), scale_data, bias_data, weight.size(0), weight.size(1) * (int4 ? 2 : 1)};
}

// Four rows at a time: four independent sums keep the multiply-add units busy while x is read once.
template <typename W>
inline void four_rows(const Matrix& m, int64_t row, const float* x, float* out) {
  const W* w = static_cast<const W*>(m.data) + row * m.cols;
  const W *w0 = w, *w1 = w + m.cols, *w2 = w + 2 * m.cols, *w3 = w + 3 * m.cols;
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < m.cols; ++i) {
    s0 += as_float(w0[i]) * x[i];
    s1 += as_float(w1[i]) * x[i];
    s2 += as_float(w2[i]) * x[i];
    s3 += as_float(w3[i]) * x[i];
  }
  out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

#ifdef __AVX512F__
#include <immintrin.h>

// Sixteen weights of a row as float32: int8 and bfloat16 widen straight from memory, one shuffle each (the
// compiler's own widening of int8 takes two steps and an extract per eight, which stalls on the shuffle port).
inline __m512 load16(const float* w) { return _mm512_loadu_ps(w); }
inline __m512 load16(const c10::BFloat16* w) {
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline __m512 load16(const int8_t* w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
}

// Each row is read in 64-byte steps (one cache line: 16 float32, 32 bfloat16 or 64 int8 weights), with a
// prefetch of the line kPrefetch bytes ahead: without it the cores keep too few memory reads in flight to
// stream bfloat16 and int8 rows from memory at the bandwidth (they reached half of it).
constexpr int64_t kPrefetch = 4096;  // measured on 2 cores: 1 KB ahead reached 60-75% of the bandwidth, 4 KB 80-100%

template <typename W>
inline void four_rows_avx512(const Matrix& m, int64_t row, const float* x, float* out) {
  constexpr int64_t line = 64 / sizeof(W);
  const W* w = static_cast<const W*>(m.data) + row * m.cols;
  const W *w0 = w, *w1 = w + m.cols, *w2 = w + 2 * m.cols, *w3 = w + 3 * m.cols;
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + line <= m.cols; i += line) {
    _mm_prefetch(reinterpret_cast<const char*>(w0 + i) + kPrefetch, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w1 + i) + kPrefetch, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w2 + i) + kPrefetch, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w3 + i) + kPrefetch, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int64_t j = i; j < i + line; j += 16) {
      __m512 xj = _mm512_loadu_ps(x + j);
      s0 = _mm512_fmadd_ps(load16(w0 + j), xj, s0);
      s1 = _mm512_fmadd_ps(load16(w1 + j), xj, s1);
      s2 = _mm512_fmadd_ps(load16(w2 + j), xj, s2);
      s3 = _mm512_fmadd_ps(load16(w3 + j), xj, s3);
    }
  }
  for (; i + 16 <= m.cols; i += 16) {
    __m512 xi = _mm512_loadu_ps(x + i);
    s0 = _mm512_fmadd_ps(load16(w0 + i), xi, s0);
    s1 = _mm512_fmadd_ps(load16(w1 + i), xi, s1);
    s2 = _mm512_fmadd_ps(load16(w2 + i), xi, s2);
    s3 = _mm512_fmadd_ps(load16(w3 + i), xi, s3);
  }
  out[0] = _mm512_reduce_add_ps(s0), out[1] = _mm512_reduce_add_ps(s1);
  out[2] = _mm512_reduce_add_ps(s2), out[3] = _mm512_reduce_add_ps(s3);
  for (; i < m.cols; ++i) {
    out[0] += as_float(w0[i]) * x[i], out[1] += as_float(w1[i]) * x[i];
    out[2] += as_float(w2[i]) * x[i], out[3] += as_float(w3[i]) * x[i];
  }
}
#endif

template <typename W>
void rows(const Matrix& m, int64_t begin, int64_t end, const float* x, float* out) {
  int64_t r = begin;
#ifdef __AVX512F__
  for (; r + 4 <= end; r += 4) four_rows_avx512<W>(m, r, x, out + r);
#else
  for (; r + 4 <= end; r += 4) four_rows<W>(m, r, x, out + r);
#endif
  for (; r < end; ++r) out[r] = dot(static_cast<const W*>(m.data) + r * m.cols, x, m.cols);
  for (r = begin; r < end; ++r) {
    if (m.scale) out[r] *= m.scale[r];
    if (m.bias) out[r] += m.bias[r];
  }
}

// int4 in llama.cpp's Q4_1 layout: groups of 32 weights along a row, each with a scale d and a minimum m
// (weight = d * q + m, q in 0..15), stored as (d, m) float32 pairs; byte j of a group's 16 holds q_j in its
// low nibble and q_(j+16) in its high one. Then row . x = sum over groups of d * (q . x) + m * sum(x).
struct Int4 {};
constexpr int64_t kGroup = 32;

template <>
void rows<Int4>(const Matrix& m, int64_t begin, int64_t end, const float* x, float* out) {
  int64_t groups = m.cols / kGroup;
  std::vector<float> x_sums(groups, 0.f);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t i = 0; i < kGroup; ++i) x_sums[g] += x[g * kGroup + i];
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* q = static_cast<const uint8_t*>(m.data) + r * m.cols / 2;
    const float* dm = m.scale + r * groups * 2;
    float minimums = 0.f;
    for (int64_t g = 0; g < groups; ++g) minimums += dm[2 * g + 1] * x_sums[g];
#ifdef __AVX512F__
    __m512 sum = _mm512_setzero_ps();
    const __m512i low_nibble = _mm512_set1_epi32(15);
    for (int64_t g = 0; g < groups; ++g) {
      __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + g * 16)));
      __m512 low = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, low_nibble));
      __m512 high = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
      const float* xg = x + g * kGroup;
      __m512 group = _mm512_fmadd_ps(high, _mm512_loadu_ps(xg + 16), _mm512_mul_ps(low, _mm512_loadu_ps(xg)));
      sum = _mm512_fmadd_ps(group, _mm512_set1_ps(dm[2 * g]), sum);
    }
    out[r] = _mm512_reduce_add_ps(sum) + minimums;
#else
    float sum = 0.f;
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* qg = q + g * 16;
      const float* xg = x + g * kGroup;
      float group = 0.f;
#pragma omp simd reduction(+ : group)
      for (int j = 0; j < 16; ++j) group += float(qg[j] & 15) * xg[j] + float(qg[j] >> 4) * xg[j + 16];
      sum += dm[2 * g] * group;
    }
    out[r] = sum + minimums;
#endif
    if (m.bias) out[r] += m.bias[r];
  }
}

// out[row] = W[row] . x for the rows of several matrices that share x, split over the thread pool as one range.
template <typename W>
void matvecs(std::initializer_list<std::pair<const Matrix*, float*>> products, const float* x) {
  std::vector<std::pair<const Matrix*, float*>> list(products);
  int64_t total = 0;
  for (auto& p : list) total += p.first->rows;
  at::parallel_for(0, total, 16, [&](int64_t begin, int64_t end) {
    int64_t offset = 0;
    for (auto& [m, out] : list) {
      int64_t lo = std::max(begin - offset, int64_t(0)), hi = std::min(end - offset, m->rows);
      if (lo < hi) rows<W>(*m, lo, hi, x, out);
      offset += m->rows;
    }
  });
}

void rms_norm(const float* x, const at::Tensor& weight, double eps, float* out, int64_t n) {
  float squares = 0.f;
#pragma omp simd reduction(+ : squares)
  for (int64_t i = 0; i < n; ++i) squares += x[i] * x[i];
  // The norm weight follows the model dtype; it is short, so converting it here costs nothing.
  at::Tensor w = weight.to(at::kFloat).contiguous();
  const float* wd = w.data_ptr<float>();
  float inv = 1.f / std::sqrt(squares / n + static_cast<float>(eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * wd[i];
}

// Rotate each (i, i + half) pair of every head by the position's angle; `sin` is signed per half.
void rope(float* v, int64_t heads, int64_t head_dim, const float* cos, const float* sin) {
  int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* x = v + h * head_dim;
    std::vector<float> rotated(head_dim);
    for (int64_t i = 0; i < head_dim; ++i) {
      float partner = i < half ? x[i + half] : x[i - half];
      rotated[i] = x[i] * cos[i] + partner * sin[i];
    }
    std::copy(rotated.begin(), rotated.end(), x);
  }
}

// Attention of one new query per head over the cached positions [first, last], grouped-query style.
template <typename C>
void attend(const float* q, const at::Tensor& keys, const at::Tensor& values, int64_t n_head, int64_t first,
            int64_t last, float* out) {
  int64_t n_kv = keys.size(1), head_dim = keys.size(3), group = n_head / n_kv;
  int64_t head_stride = keys.stride(1), pos_stride = keys.stride(2);
  const C* k_data = keys.data_ptr<C>();
  const C* v_data = values.data_ptr<C>();
  float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  at::parallel_for(0, n_head, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(last - first + 1);
    for (int64_t h = begin; h < end; ++h) {
      const float* qh = q + h * head_dim;
      const C* kh = k_data + (h / group) * head_stride;
      const C* vh = v_data + (h / group) * head_stride;
      float top = -INFINITY;
      for (int64_t t = first; t <= last; ++t) {
        scores[t - first] = dot(kh + t * pos_stride, qh, head_dim) * scale;
        top = std::max(top, scores[t - first]);
      }
      float total = 0.f;
      for (auto& s : scores) total += (s = std::exp(s - top));
      float* oh = out + h * head_dim;
      std::fill(oh, oh + head_dim, 0.f);
      for (int64_t t = first; t <= last; ++t) {
        float p = scores[t - first] / total;
        const C* vt = vh + t * pos_stride;
#pragma omp simd
        for (int64_t i = 0; i < head_dim; ++i) oh[i] += p * as_float(vt[i]);
      }
    }
  });
}

template <typename C>
void store(const float* from, const at::Tensor& cache, int64_t pos) {
  int64_t n_kv = cache.size(1), head_dim = cache.size(3);
  C* data = cache.data_ptr<C>();
  for (int64_t h = 0; h < n_kv; ++h)
    for (int64_t i = 0; i < head_dim; ++i)
      data[h * cache.stride(1) + pos * cache.stride(2) + i] = static_cast<C>(from[h * head_dim + i]);
}

struct Layer {
  Matrix q, k, v, o, gate, up, down;
};

template <typename W, typename C>
void layer_step(float* x, const Layer& L, const at::Tensor& attn_norm, const at::Tensor& mlp_norm, double eps,
                const at::Tensor& keys, const at::Tensor& values, int64_t pos, int64_t window, const float* cos,
                const float* sin) {
  int64_t hidden = L.o.rows, n_kv = keys.size(1), head_dim = keys.size(3), n_head = L.q.rows / head_dim;
  std::vector<float> normed(hidden), q(L.q.rows), k(L.k.rows), v(L.v.rows), attended(L.o.cols), out(hidden);

  rms_norm(x, attn_norm, eps, normed.data(), hidden);
  matvecs<W>({{&L.q, q.data()}, {&L.k, k.data()}, {&L.v, v.data()}}, normed.data());
  rope(q.data(), n_head, head_dim, cos, sin);
  rope(k.data(), n_kv, head_dim, cos, sin);
  store<C>(k.data(), keys, pos);
  store<C>(v.data(), values, pos);
  int64_t first = window > 0 ? std::max(pos - window + 1, int64_t(0)) : 0;
  attend<C>(q.data(), keys, values, n_head, first, pos, attended.data());
  matvecs<W>({{&L.o, out.data()}}, attended.data());
  for (int64_t i = 0; i < hidden; ++i) x[i] += out[i];

  rms_norm(x, mlp_norm, eps, normed.data(), hidden);
  int64_t inner = L.gate.rows;
  std::vector<float> gate(inner), up(inner);
  matvecs<W>({{&L.gate, gate.data()}, {&L.up, up.data()}}, normed.data());
  for (int64_t i = 0; i < inner; ++i) gate[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];  // SiLU(gate) * up
  matvecs<W>({{&L.down, out.data()}}, gate.data());
  for (int64_t i = 0; i < hidden; ++i) x[i] += out[i];
}

// Runs one layer for one token, in place on `x` (hidden,) float32, writing this position's key and value
// into the cache buffers (1, n_kv, capacity, head_dim) at `pos`. `scales` hold the int8 weights' row scales
// or the int4 weights' (scale, minimum) pairs in the order q, k, v, o, gate, up, down (empty for float weights);
// `biases` those of q, k, v (Qwen2).
void decode_layer(at::Tensor x, at::Tensor attn_norm, at::Tensor mlp_norm, at::TensorList weights,
                  at::TensorList scales, at::TensorList biases, at::Tensor keys, at::Tensor values, int64_t pos,
                  int64_t window, at::Tensor cos, at::Tensor sin, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous(), "decode_layer: x must be contiguous float32");
  TORCH_CHECK(weights.size() == 7, "decode_layer: expected 7 weights (q, k, v, o, gate, up, down)");
  TORCH_CHECK(keys.size(0) == 1 && keys.stride(3) == 1 && values.strides() == keys.strides(),
              "decode_layer: the cache must be (1, n_kv, capacity, head_dim) with contiguous rows");
  TORCH_CHECK(pos < keys.size(2), "decode_layer: position ", pos, " is beyond the cache capacity ", keys.size(2));
  auto scale = [&](size_t i) { return scales.empty() ? c10::optional<at::Tensor>() : c10::optional<at::Tensor>(scales[i]); };
  auto bias = [&](size_t i) { return biases.empty() ? c10::optional<at::Tensor>() : c10::optional<at::Tensor>(biases[i]); };
  Layer L{matrix(weights[0], scale(0), bias(0)), matrix(weights[1], scale(1), bias(1)),
          matrix(weights[2], scale(2), bias(2)), matrix(weights[3], scale(3), {}),
          matrix(weights[4], scale(4), {}),      matrix(weights[5], scale(5), {}),
          matrix(weights[6], scale(6), {})};
  at::Tensor cos_f = cos.to(at::kFloat).contiguous(), sin_f = sin.to(at::kFloat).contiguous();
  float* xd = x.data_ptr<float>();
  const float *c = cos_f.data_ptr<float>(), *s = sin_f.data_ptr<float>();
  auto weight_type = weights[0].scalar_type();
  bool bf16_cache = keys.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16_cache || keys.scalar_type() == at::kFloat, "decode_layer: the cache must be float32 or bfloat16");
#define OPENFORMERS_RUN(W)                                                                                       \
  (bf16_cache ? layer_step<W, c10::BFloat16>(xd, L, attn_norm, mlp_norm, eps, keys, values, pos, window, c, s) \
              : layer_step<W, float>(xd, L, attn_norm, mlp_norm, eps, keys, values, pos, window, c, s))
  if (weight_type == at::kFloat) OPENFORMERS_RUN(float);
  else if (weight_type == at::kBFloat16) OPENFORMERS_RUN(c10::BFloat16);
  else if (weight_type == at::kChar) OPENFORMERS_RUN(int8_t);
  else if (weight_type == at::kByte) OPENFORMERS_RUN(Int4);
  else TORCH_CHECK(false, "decode_layer: weights must be float32, bfloat16, int8 or int4 (uint8), got ", weight_type);
#undef OPENFORMERS_RUN
}

// y = W x for one vector x (cols,) float32: the language-model head of a decoding step.
at::Tensor matvec(at::Tensor x, at::Tensor weight, c10::optional<at::Tensor> scale) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous(), "matvec: x must be contiguous float32");
  Matrix m = matrix(weight, scale, {});
  TORCH_CHECK(x.numel() == m.cols, "matvec: x has ", x.numel(), " values for ", m.cols, " weight columns");
  at::Tensor y = at::empty({m.rows}, x.options());
  const float* xd = x.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  switch (weight.scalar_type()) {
    case at::kFloat: matvecs<float>({{&m, yd}}, xd); break;
    case at::kBFloat16: matvecs<c10::BFloat16>({{&m, yd}}, xd); break;
    case at::kChar: matvecs<int8_t>({{&m, yd}}, xd); break;
    case at::kByte: matvecs<Int4>({{&m, yd}}, xd); break;
    default: TORCH_CHECK(false, "matvec: weights must be float32, bfloat16, int8 or int4 (uint8), got ", weight.scalar_type());
  }
  return y;
}

}  // namespace

TORCH_LIBRARY(openformers, m) {
  m.def("decode_layer(Tensor(a!) x, Tensor attn_norm, Tensor mlp_norm, Tensor[] weights, Tensor[] scales, "
        "Tensor[] biases, Tensor(b!) keys, Tensor(c!) values, int pos, int window, Tensor cos, Tensor sin, "
        "float eps) -> ()");
  m.def("matvec(Tensor x, Tensor weight, Tensor? scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(openformers, CPU, m) {
  m.impl("decode_layer", decode_layer);
  m.impl("matvec", matvec);
}
