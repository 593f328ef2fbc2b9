// One decoding step of a Llama-style decoder stack for a single sequence, as one call.
//
// Decoding one token is a string of matrix-vector products over weights that are read once each, plus some
// forty small operations per layer. PyTorch runs each small operation as its own dispatched kernel, which
// costs more than the arithmetic; its matrix-vector products also stream the weights well below the memory
// bandwidth. Here a layer is a handful of loops run by one OpenMP team for the whole step (see Team): the
// threads claim the products' rows in chunks, everything else runs in place on buffers of a few kilobytes. A
// team that finds its CPU shared with other work (its threads descheduled, or asleep waiting for one that was)
// leaves threads out of the next ones and tries them again later (see Crowding); the outputs do not depend on
// the number of threads.
//
// Weights are float32, bfloat16, int8 with one float32 scale per 32 weights of a row (llama.cpp's Q8_0 grid), or
// int4 in groups of 32 (see Int4 below); activations are float32 (rounded to bfloat16 for bfloat16 weights' products, as PyTorch
// does, and to 8-bit steps per block of 32 for int8 and int4 weights' products, which then run as integer dot
// products: see Rounded); the key/value cache is float32 or bfloat16. Loops are plain C++ that the compiler
// vectorizes (`omp simd`, -O3 -march=native), except the weight rows' inner loops, which have AVX-512 versions
// (AVX-512 VNNI for the integer ones, AVX2 or AVX-VNNI for those on x86-64-v3) because the compiler widens
// bfloat16 poorly and finds no integer dot instructions itself. Every such path has a plain one beside it, which
// older CPUs (x86-64) and other architectures (ARM's NEON) build instead; tests/test_kernels_portability.py
// builds those targets and checks them against PyTorch. Built with -fopenmp: the team and at::parallel_for (the
// language-model head) are OpenMP, and without the flag at::parallel_for's inline pragmas run on one thread.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <omp.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <ctime>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

inline float as_float(float v) { return v; }
inline float as_float(c10::BFloat16 v) { return static_cast<float>(v); }
inline float as_float(c10::Half v) { return static_cast<float>(v); }  // int4's (scale, minimum) pairs

template <typename T>
inline float dot(const T* w, const float* x, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += as_float(w[i]) * x[i];
  return sum;
}

// A weight matrix (rows, cols), row-major, with its optional scales (int8: one float32 per 32 weights of a row, or
// per 16 (`scale_group`), `scale`; int4: a float16 (scale, minimum) pair per 32, `pairs`) and bias.
struct Matrix {
  const void* data;
  const float* scale;
  const float* bias;
  int64_t rows, cols, row_bytes;
  const c10::Half* pairs = nullptr;
  // int8: weights per scale. 16 holds a GGUF Q6_K matrix as it is: a 6-bit step per weight (the int8 weight) and
  // d times a signed 8-bit scale per 16 weights (exact in float32), which no scale per 32 can hold.
  int64_t scale_group = 32;
  // Stored (cols, rows), an input's weights in a row (gpt-oss's float experts, Mixture::in_major): read by
  // in_major_rows alone.
  bool in_major = false;

  int64_t scales_per_row() const { return (cols + scale_group - 1) / scale_group; }

  // `count` of its rows from row `first` on, as a matrix of their own (Phi-3's fused q/k/v, its and GLM's gate/up).
  Matrix rows_from(int64_t first, int64_t count) const {
    Matrix part = *this;
    part.data = static_cast<const char*>(data) + first * row_bytes;
    if (scale) part.scale = scale + first * scales_per_row();
    if (pairs) part.pairs = pairs + first * (cols / 32) * 2;
    if (bias) part.bias = bias + first;
    part.rows = count;
    return part;
  }
};

// `weight` (with its `scale`, when quantized) as a Matrix, or the reason it cannot be one: a 2-D contiguous tensor,
// int4's with their float16 (scale, minimum) pairs, int8's with float32 scales per 32 or per 16. It throws nothing,
// so a step's team can read an expert's matrix once the router has picked it (mixture_step).
const char* try_matrix(const at::Tensor& weight, const at::Tensor* scale, const float* bias_data, Matrix& out) {
  if (!weight.defined() || weight.dim() != 2 || !weight.is_contiguous())
    return "weights must be contiguous 2-D tensors";
  auto type = weight.scalar_type();
  bool int4 = type == at::kByte;  // two weights per byte
  bool scaled = scale && scale->defined();
  int64_t rows = weight.size(0), cols = weight.size(1);
  if (int4 && !(scaled && scale->scalar_type() == at::kHalf && scale->is_contiguous() &&
                scale->numel() == weight.numel() / 8))
    return "int4 weights need contiguous float16 (rows, cols / 32, 2) scales and minimums";
  if (type == at::kChar && !(scaled && scale->scalar_type() == at::kFloat && scale->is_contiguous()))
    return "int8 weights need contiguous float32 scales";
  // int8 scales per 32 weights, or per 16 for rows of whole 16s; a row of 16 or fewer has one scale either way
  bool per_16 = type == at::kChar && cols % 16 == 0 && scale->numel() == rows * (cols / 16);
  if (type == at::kChar && !per_16 && scale->numel() != rows * ((cols + 31) / 32))
    return "int8 weights need (rows, ceil(cols / 32)) scales, one per block of 32, or (rows, cols / 16), one per 16";
  const float* scale_data = scaled && !int4 ? scale->data_ptr<float>() : nullptr;
  out = {weight.data_ptr(), scale_data, bias_data, rows, cols * (int4 ? 2 : 1), cols * weight.element_size(),
         int4 ? scale->data_ptr<c10::Half>() : nullptr, per_16 ? 16 : 32};
  return nullptr;
}

Matrix matrix(const at::Tensor& weight, const c10::optional<at::Tensor>& scale, const c10::optional<at::Tensor>& bias) {
  Matrix m;
  const char* problem = try_matrix(weight, scale ? &*scale : nullptr,
                                   bias && bias->defined() ? bias->data_ptr<float>() : nullptr, m);
  TORCH_CHECK(!problem, "openformers kernels: ", problem);
  return m;
}

// How far ahead of the rows being multiplied their weights are prefetched: without it the cores keep too few
// memory reads in flight to stream bfloat16 and int8 rows at the bandwidth (they reached half of it). Measured
// on 2 cores: 1 KB ahead reached 60-75% of the bandwidth, 4 KB 80-100%.
constexpr int64_t kPrefetch = 4096;

inline void prefetch(const void* address) { __builtin_prefetch(address, 0, 3); }
// Into the L2 cache, not the L1 (prefetcht1): a float row's weights are read once, a few hundred cycles later.
// One core of this CPU (AMD EPYC, AVX-512), gate and up rows of 30 layers from memory, CPU time: prefetcht0
// 4 KB ahead read 25.8 GB/s on 2 MB pages and 23.5 on 4 KB pages, prefetcht1 30.1 and 28.2, none 29.9 and 27.5.
inline void prefetch_to_l2(const void* address) { __builtin_prefetch(address, 0, 2); }

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
// Sixteen weights of a row as float32: bfloat16 widens straight from memory, one shuffle each.
inline __m512 load16(const float* w) { return _mm512_loadu_ps(w); }
inline __m512 load16(const c10::BFloat16* w) {
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// One row at a time, front to back: a product then reads its rows as one sequential stream, which the
// hardware prefetchers follow at full speed. Four rows read side by side (to load x once for them) are four
// short streams of a row's length each (1-6 KB here), which they pick up too late: 12.2 GB/s of float32 and
// 9.2 GB/s of bfloat16 weights on one core, against 16.3 and 16.7 one row at a time (benchmarks/matvec.py
// --threads 1 --cpu-time, 1536 x 576, on a loaded machine). x stays in the L1 cache, so reading it again per row
// costs a load, not memory traffic.
// Prefetching kPrefetch bytes ahead runs past the row's end into the next rows of the same stream.
template <typename W>
inline float row_avx512(const W* w, const float* x, int64_t cols) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 64 <= cols; i += 64) {
    for (int64_t b = 0; b < 64 * int64_t(sizeof(W)); b += 64) prefetch_to_l2(reinterpret_cast<const char*>(w + i) + kPrefetch + b);
    s0 = _mm512_fmadd_ps(load16(w + i), _mm512_loadu_ps(x + i), s0);
    s1 = _mm512_fmadd_ps(load16(w + i + 16), _mm512_loadu_ps(x + i + 16), s1);
    s2 = _mm512_fmadd_ps(load16(w + i + 32), _mm512_loadu_ps(x + i + 32), s2);
    s3 = _mm512_fmadd_ps(load16(w + i + 48), _mm512_loadu_ps(x + i + 48), s3);
  }
  for (; i + 16 <= cols; i += 16) s0 = _mm512_fmadd_ps(load16(w + i), _mm512_loadu_ps(x + i), s0);
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (; i < cols; ++i) sum += as_float(w[i]) * x[i];
  return sum;
}
#endif

#ifndef __AVX512F__
// One row at a time, as row_avx512 and for the same reason, in plain C++ that the compiler vectorizes: 32
// partial sums (four AVX2 registers) keep the multiply-adds independent. On this CPU built for x86-64-v3, one
// core, CPU time: 12.6 -> 17.9 GB/s of float32 weights and 8.4 -> 18.0 of bfloat16 against four rows side by side.
template <typename W>
inline float row_sum(const W* w, const float* x, int64_t cols) {
  constexpr int64_t lanes = 32;
  float partial[lanes] = {};
  int64_t i = 0;
  for (; i + lanes <= cols; i += lanes) {
    for (int64_t b = 0; b < lanes * int64_t(sizeof(W)); b += 64) prefetch_to_l2(reinterpret_cast<const char*>(w + i) + kPrefetch + b);
#pragma omp simd
    for (int64_t k = 0; k < lanes; ++k) partial[k] += as_float(w[i + k]) * x[i + k];
  }
  float sum = 0.f;
  for (int64_t k = 0; k < lanes; ++k) sum += partial[k];
  for (; i < cols; ++i) sum += as_float(w[i]) * x[i];
  return sum;
}
#endif

template <typename W>
void rows(const Matrix& m, int64_t begin, int64_t end, const float* x, float* out) {
  int64_t r = begin;
#ifdef __AVX512F__
  for (; r < end; ++r) out[r] = row_avx512(static_cast<const W*>(m.data) + r * m.cols, x, m.cols);
#else
  for (; r < end; ++r) out[r] = row_sum(static_cast<const W*>(m.data) + r * m.cols, x, m.cols);
#endif
  for (r = begin; r < end; ++r) {
    if (m.scale) out[r] *= m.scale[r];
    if (m.bias) out[r] += m.bias[r];
  }
}

#ifdef __AVX512BF16__
// bfloat16 weights times the activations rounded to bfloat16 too (PyTorch's bfloat16 matmul takes them so):
// one vdpbf16ps multiplies 32 pairs into 16 float32 sums, a third of the instructions of widening the weights.
// One row at a time, as row_avx512 and for the same reason.
// n values rounded to bfloat16 (to nearest even, as PyTorch rounds) into `rounded`.
void round_to_bfloat16(const float* x, int64_t n, std::vector<c10::BFloat16>& rounded) {
  rounded.resize(n);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rounded.data() + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
  for (; i < n; ++i) rounded[i] = c10::BFloat16(x[i]);
}

inline __m512bh bfloat16_pairs(const c10::BFloat16* p) { return (__m512bh)_mm512_loadu_si512(p); }

// bfloat16_rows for rows of 64 * Blocks weights, with the input held in 2 * Blocks registers for the whole call.
// Rows this short (SmolLM2's 576 columns: 1152 bytes) ran at ~88% of the speed of reading them when each row
// read the input again from the L1 cache, and at the reading speed with it held: one core, 264 MB of 576-column
// rows from memory, 30-31 GB/s against 34-35 for a plain read (a longer row, 1536 columns, read at 34 either
// way). 24 registers of input leave 8 for the sums and the weights.
constexpr int64_t kMostHeldBlocks = 12;

template <int Blocks>
void bfloat16_rows_held(const Matrix& m, int64_t begin, int64_t end, const c10::BFloat16* xb, float* out) {
  __m512bh x[2 * Blocks];
  for (int k = 0; k < 2 * Blocks; ++k) x[k] = bfloat16_pairs(xb + 32 * k);
  for (int64_t r = begin; r < end; ++r) {
    const c10::BFloat16* w = static_cast<const c10::BFloat16*>(m.data) + r * m.cols;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
#pragma GCC unroll 12
    for (int k = 0; k < Blocks; ++k) {
      prefetch_to_l2(reinterpret_cast<const char*>(w + 64 * k) + kPrefetch);
      prefetch_to_l2(reinterpret_cast<const char*>(w + 64 * k + 32) + kPrefetch);
      s0 = _mm512_dpbf16_ps(s0, bfloat16_pairs(w + 64 * k), x[2 * k]);
      s1 = _mm512_dpbf16_ps(s1, bfloat16_pairs(w + 64 * k + 32), x[2 * k + 1]);
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    out[r] = m.bias ? sum + m.bias[r] : sum;
  }
}

// bfloat16_rows_held for each width of 64 to 64 * kMostHeldBlocks weights, by the width's count of 64s less one.
using BFloat16Rows = void (*)(const Matrix&, int64_t, int64_t, const c10::BFloat16*, float*);

template <size_t... Blocks>
constexpr std::array<BFloat16Rows, sizeof...(Blocks)> held_rows(std::index_sequence<Blocks...>) {
  return {bfloat16_rows_held<int(Blocks) + 1>...};
}

// Rows [begin, end) times the input xb, already rounded: the steps round each input once (Rounded, RoundedBatch),
// not once per claimed chunk, where rounding a 1536-value input for every 16 rows of a down projection cost a
// seventh of the product's time on one thread. Rows of up to 64 * kMostHeldBlocks weights, in 64s, hold the input.
void bfloat16_rows(const Matrix& m, int64_t begin, int64_t end, const c10::BFloat16* xb, float* out) {
  static constexpr auto held = held_rows(std::make_index_sequence<kMostHeldBlocks>());
  if (m.cols % 64 == 0 && m.cols <= 64 * kMostHeldBlocks) return held[m.cols / 64 - 1](m, begin, end, xb, out);
  for (int64_t r = begin; r < end; ++r) {
    const c10::BFloat16* w = static_cast<const c10::BFloat16*>(m.data) + r * m.cols;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t j = 0;
    for (; j + 64 <= m.cols; j += 64) {  // two cache lines of the row
      prefetch_to_l2(reinterpret_cast<const char*>(w + j) + kPrefetch);
      prefetch_to_l2(reinterpret_cast<const char*>(w + j + 32) + kPrefetch);
      s0 = _mm512_dpbf16_ps(s0, bfloat16_pairs(w + j), bfloat16_pairs(xb + j));
      s1 = _mm512_dpbf16_ps(s1, bfloat16_pairs(w + j + 32), bfloat16_pairs(xb + j + 32));
    }
    for (; j + 32 <= m.cols; j += 32) s0 = _mm512_dpbf16_ps(s0, bfloat16_pairs(w + j), bfloat16_pairs(xb + j));
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; j < m.cols; ++j) sum += as_float(w[j]) * as_float(xb[j]);
    out[r] = m.bias ? sum + m.bias[r] : sum;
  }
}
#endif

// int4 in llama.cpp's Q4_1 layout: groups of 32 weights along a row, each with a scale d and a minimum m
// (weight = d * q + m, q in 0..15), stored as (d, m) float16 pairs beside the steps (a group reads 20 bytes, as
// Q4_1's; float32 pairs made it 24, a fifth more for decoding to stream); byte j of a group's 16 holds q_j in its
// low nibble and q_(j+16) in its high one. A float16 converts to float32 exactly (vcvtph2ps: eight in one
// instruction), so the products' arithmetic is float32 as before.
struct Int4 {};
constexpr int64_t kGroup = 32;

template <typename W>
constexpr bool kInteger = std::is_same_v<W, int8_t> || std::is_same_v<W, Int4>;

// run(W{}) for the weight layout that a weight tensor's dtype stores: float32, bfloat16, int8, int4 (uint8).
template <typename Run>
void with_layout(at::ScalarType type, const char* op, Run run) {
  switch (type) {
    case at::kFloat: return run(float{});
    case at::kBFloat16: return run(c10::BFloat16{});
    case at::kChar: return run(int8_t{});
    case at::kByte: return run(Int4{});
    default: TORCH_CHECK(false, op, ": weights must be float32, bfloat16, int8 or int4 (uint8), got ", type);
  }
}

// Row r of int4 weights as float32 (scale * q + minimum).
void unpack_int4_row(const Matrix& m, int64_t r, float* row) {
  int64_t groups = m.cols / kGroup;
  const uint8_t* q = static_cast<const uint8_t*>(m.data) + r * m.row_bytes;
  const c10::Half* dm = m.pairs + r * groups * 2;
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* qg = q + g * 16;
    float *low = row + g * kGroup, *high = low + 16, d = dm[2 * g], minimum = dm[2 * g + 1];
#pragma omp simd
    for (int j = 0; j < 16; ++j) {
      low[j] = (qg[j] & 15) * d + minimum;
      high[j] = (qg[j] >> 4) * d + minimum;
    }
  }
}

// One block of count <= 32 values x rounded to int8 steps q (x ~ s * q, the largest magnitude at 127): returns s,
// and the sums of steps 0-15 and 16-31 in half_sums.
inline float round_block(const float* x, int64_t count, int8_t* q, int32_t* half_sums) {
  float top = 0.f;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if (count == kGroup) {
    __m512 low = _mm512_loadu_ps(x), high = _mm512_loadu_ps(x + 16);
    top = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high)));
    __m512 inverse = _mm512_set1_ps(top > 0.f ? 127.f / top : 0.f);
    // cvtps rounds to nearest even, as nearbyint below does in the default rounding mode
    __m512i q_low = _mm512_cvtps_epi32(_mm512_mul_ps(low, inverse));
    __m512i q_high = _mm512_cvtps_epi32(_mm512_mul_ps(high, inverse));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(q_low));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtepi32_epi8(q_high));
    half_sums[0] = _mm512_reduce_add_epi32(q_low), half_sums[1] = _mm512_reduce_add_epi32(q_high);
    return top / 127.f;
  }
#endif
  for (int64_t i = 0; i < count; ++i) top = std::max(top, std::fabs(x[i]));
  float inverse = top > 0.f ? 127.f / top : 0.f;
  half_sums[0] = half_sums[1] = 0;
  for (int64_t i = 0; i < count; ++i) {
    q[i] = static_cast<int8_t>(std::nearbyint(x[i] * inverse));
    half_sums[i / 16] += q[i];
  }
  return top / 127.f;
}

// The input of a product, and for int8 and int4 weights its values rounded to 8 bits: per block of 32, int8
// steps q with one float32 scale s (x ~ s * q, the block's largest magnitude at 127), as llama.cpp's Q8_1.
// Integer weights then multiply integer steps, 64 products per instruction with AVX-512 VNNI's vpdpbusd
// (u8 x s8 summed in fours into int32), where widening every weight to float32 took five instructions per 16
// and left the products compute-bound at half the memory bandwidth. The product is exactly W times the rounded
// input (float sums aside): int4's minimums take s * sum(q) per block, not the float sum of x, so that one
// definition holds for the tests to check. Rounding costs every product |x_i| <= s/2 per input; llama.cpp's
// Q8_0 and Q4_1 products round their input the same way.
struct Rounded {
  const float* x = nullptr;     // the float values (what float32 and bfloat16 weights multiply)
  std::vector<int8_t> q;        // steps, zero up to a multiple of 64 (one AVX-512 load)
  std::vector<float> scales;    // per pair of blocks, the first block's scale 8 times then the second's 8 times:
                                // the 16 int32 sums of one vpdpbusd over 64 steps, scaled in one multiply
  std::vector<float> pair_sums; // per block (0, s * sum(q)): dotted with an int4 row's (d, m) pairs, the
                                // minimums' share of its product in one vectorized loop
  std::vector<int8_t> quads;      // int4 only: per 4 whole blocks, their steps 0-15 then their steps 16-31, in the
                                  // order of the low and then the high nibbles of 64 bytes of an int4 row
  std::vector<float> quad_scales; // per 4 blocks, each block's scale 4 times: the 16 int32 sums of 128 steps
  std::vector<c10::BFloat16> bfloat16;  // bfloat16 weights only: x rounded to bfloat16

  float scale(int64_t block) const { return scales[block / 2 * 16 + block % 2 * 8]; }

  // Rounding for integer weights, and to bfloat16 for bfloat16 weights; float32 weights take x as it is.
  template <typename W>
  void set(const float* values, int64_t n) {
    x = values;
    if constexpr (kInteger<W>) round(n);
#ifdef __AVX512BF16__
    if constexpr (std::is_same_v<W, c10::BFloat16>) round_to_bfloat16(values, n, bfloat16);
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    if constexpr (std::is_same_v<W, Int4>) arrange_quads(n / kGroup / 4);  // what integer_rows<Int4> reads
#endif
  }

  void arrange_quads(int64_t count) {
    quads.resize(count * 128);
    quad_scales.resize(count * 16);
    for (int64_t b = 0; b < count * 4; ++b) {
      int8_t* target = quads.data() + b / 4 * 128 + b % 4 * 16;
      std::copy_n(q.data() + b * kGroup, 16, target);
      std::copy_n(q.data() + b * kGroup + 16, 16, target + 64);
      std::fill_n(quad_scales.begin() + b * 4, 4, scale(b));
    }
  }

  void round(int64_t n) {
    int64_t blocks = (n + kGroup - 1) / kGroup, padded = (blocks + 1) / 2 * 64;
    q.assign(padded, 0);
    scales.assign(padded / 4, 0.f);
    pair_sums.assign(2 * blocks, 0.f);
    for (int64_t b = 0; b < blocks; ++b) {
      int32_t sums[2];
      float scale = round_block(x + b * kGroup, std::min(kGroup, n - b * kGroup), q.data() + b * kGroup, sums);
      std::fill_n(scales.begin() + b / 2 * 16 + b % 2 * 8, 8, scale);
      pair_sums[2 * b + 1] = scale * static_cast<float>(sums[0] + sums[1]);
    }
  }
};

// One row's int8 weights (with their scales per `group` weights, `ws`) from column `from` (a multiple of 32) on,
// times the rounded input.
inline float int8_dot(const int8_t* w, const float* ws, int64_t group, const Rounded& in, int64_t from, int64_t cols) {
  float sum = 0.f;
  for (int64_t b = from; b < cols; b += group) {
    int64_t last = std::min(b + group, cols);
    int32_t block = 0;
#pragma omp simd reduction(+ : block)
    for (int64_t i = b; i < last; ++i) block += int32_t(w[i]) * int32_t(in.q[i]);
    sum += ws[b / group] * in.scale(b / kGroup) * static_cast<float>(block);
  }
  return sum;
}

// One row's int4 minimums of groups [from, to) times the input's step sums: their share of its product. A plain
// loop for the one or two groups that the vector loops leave: `dot`'s vectorized reduction stored 16 lanes and added
// them one by one, which for SmolLM2's 576 columns (two groups left) took 37% of integer_rows<Int4>'s time.
inline float minimums_share(const c10::Half* dm, const Rounded& in, int64_t from, int64_t to) {
  float sum = 0.f;
  for (int64_t g = from; g < to; ++g) sum += dm[2 * g + 1] * in.pair_sums[2 * g + 1];
  return sum;
}

// One row's int4 groups [from, to) times the rounded input, minimums aside.
inline float int4_dot(const uint8_t* q, const c10::Half* dm, const Rounded& in, int64_t from, int64_t to) {
  float sum = 0.f;
  for (int64_t g = from; g < to; ++g) {
    const uint8_t* qg = q + g * 16;
    const int8_t* xg = in.q.data() + g * kGroup;
    int32_t group = 0;
#pragma omp simd reduction(+ : group)
    for (int j = 0; j < 16; ++j) group += int32_t(qg[j] & 15) * xg[j] + int32_t(qg[j] >> 4) * xg[j + 16];
    sum += dm[2 * g] * in.scale(g) * static_cast<float>(group);
  }
  return sum;
}

#if defined(__AVX2__) && !(defined(__AVX512VNNI__) && defined(__AVX512BW__))
// 32 unsigned bytes times 32 signed ones, summed in fours into 8 int32: AVX-VNNI's one instruction, or AVX2's
// vpmaddubsw (pairs into int16: at most 2 x 127 x 127, below int16's saturation) and vpmaddwd.
inline __m256i dot_u8s8(__m256i u, __m256i s) {
#ifdef __AVXVNNI__
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

inline float reduce_add(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  return _mm_cvtss_f32(_mm_add_ss(sum, _mm_movehdup_ps(sum)));
}
#endif

#if defined(__AVX2__) || defined(__AVX512F__)
// int4 (d, m) pairs as float32 lanes: four groups' (d0, m0, ..., d3, m3), or two groups' (d0, m0, d1, m1).
inline __m256 four_pairs(const c10::Half* dm) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dm))); }
inline __m128 two_pairs(const c10::Half* dm) { return _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(dm))); }
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
// The sums of four rows' 16 lanes each, as lanes 0-3: pairs of lanes added across the four registers (unpack,
// shuffle, then the 128-bit parts), 9 instructions where _mm512_reduce_add_ps takes about 8 per register.
inline __m128 four_sums(const __m512* v) {
  __m512 a = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));  // 0 1 0 1 per 128
  __m512 b = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));  // 2 3 2 3 per 128
  __m512 c = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));  // 0 1 2 3 per 128 bits
  __m256 d = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  return _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
}
#endif

// Rows [begin, end) of int8 or int4 weights times the rounded input, four rows at a time (four independent sums,
// the input's steps loaded once for them). The four rows lie one after another in memory and are read side by
// side, so the prefetches run ahead of them as one stream, at the rate they are read (kPrefetch bytes ahead of
// the first row, a cache line per row and step), as do int4's scales: prefetching each row ahead of itself,
// four short streams, and int4's next rows in one burst per four left the cores waiting on memory. One thread,
// weights not in the caches (1536 x 576, 576 x 1536), interleaved: int8 96-104 and 84-88 us -> 39-55 and 48-65
// us (10 -> 18-25 GB/s); int4 51 and 70-74 us -> 40-41 and 38-42 us, near the 35-37 us of weights in the cache.
template <typename W>
void integer_rows(const Matrix& m, int64_t begin, int64_t end, const Rounded& in, float* out);

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
// The 16 int32 sums of 64 int8 weights (4 weights each) as their weight scales' lanes: two blocks' 8 each, the
// first block's scale in lanes 0-7 and the second's above; with a scale per 16 weights, four scales' 4 each.
inline __m512i int8_scale_lanes(const Matrix& m) {
  return m.scale_group == 16 ? _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)
                             : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
}

// The weight scales of 64 columns from `scales` (the row's scales of those columns) in the lanes of their sums.
inline __m512 int8_scales(const float* scales, int64_t group, __m512i lanes) {
  __m128 held = group == 16 ? _mm_loadu_ps(scales) : _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales)));
  return _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(held));
}
#endif

// int8 weights are signed and vpdpbusd's first operand is unsigned: the input's magnitudes are that operand, loaded
// once for four rows, and each weight takes its input's sign (one masked subtraction per 64 weights). Each block's
// int32 sum is scaled by its weight scale times its input scale (Q8_0 x Q8_0, as llama.cpp's product); with a
// scale per 16 weights, each half block's.
template <>
void integer_rows<int8_t>(const Matrix& m, int64_t begin, int64_t end, const Rounded& in, float* out) {
  const int64_t per_row = m.scales_per_row(), group = m.scale_group;
  auto row = [&](int64_t r) { return static_cast<const int8_t*>(m.data) + r * m.cols; };
  auto row_scales = [&](int64_t r) { return m.scale + r * per_row; };
  int64_t r = begin;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  const int64_t whole = m.cols / 64 * 64;
  const __m512i zero = _mm512_setzero_si512();
  const __m512i scale_lanes = int8_scale_lanes(m);
  for (; r + 4 <= end; r += 4) {
    const int8_t* w[4] = {row(r), row(r + 1), row(r + 2), row(r + 3)};
    const float* ws[4] = {row_scales(r), row_scales(r + 1), row_scales(r + 2), row_scales(r + 3)};
    __m512 sums[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t i = 0; i < whole; i += 64) {
      __m512i steps = _mm512_loadu_si512(in.q.data() + i);
      __m512i magnitudes = _mm512_abs_epi8(steps);
      __mmask64 negative = _mm512_movepi8_mask(steps);
      __m512 scale = _mm512_loadu_ps(in.scales.data() + i / 4);
      for (int k = 0; k < 4; ++k) {
        prefetch(w[0] + kPrefetch + 4 * i + 64 * k);  // the four rows are one stream: see integer_rows
        __m512i weights = _mm512_loadu_si512(w[k] + i);
        __m512i signed_weights = _mm512_mask_sub_epi8(weights, negative, zero, weights);
        __m512i dots = _mm512_dpbusd_epi32(zero, magnitudes, signed_weights);
        __m512 d = int8_scales(ws[k] + i / group, group, scale_lanes);
        sums[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(d, scale), sums[k]);
      }
    }
    for (int64_t b = 4 * whole; b < 4 * m.cols; b += 64) prefetch(w[0] + kPrefetch + b);  // the columns past 64s
    _mm_storeu_ps(out + r, four_sums(sums));
    if (whole < m.cols)
      for (int k = 0; k < 4; ++k) out[r + k] += int8_dot(w[k], ws[k], group, in, whole, m.cols);
  }
#elif defined(__AVX2__)
  const int64_t whole = m.cols / kGroup * kGroup;
  for (; r + 4 <= end; r += 4) {
    const int8_t* w[4] = {row(r), row(r + 1), row(r + 2), row(r + 3)};
    const float* ws[4] = {row_scales(r), row_scales(r + 1), row_scales(r + 2), row_scales(r + 3)};
    __m256 sums[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < whole; i += kGroup) {
      __m256i steps = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in.q.data() + i));
      __m256i magnitudes = _mm256_sign_epi8(steps, steps);
      float scale = in.scale(i / kGroup);
      for (int k = 0; k < 4; ++k) {
        if (k < 2) prefetch(w[0] + kPrefetch + 4 * i + 64 * k);
        __m256i weights = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[k] + i));
        __m256i dots = dot_u8s8(magnitudes, _mm256_sign_epi8(weights, steps));
        // lanes 0-3 sum the block's first 16 weights, 4-7 its last 16
        __m256 d = group == 16 ? _mm256_set_m128(_mm_set1_ps(ws[k][i / 16 + 1] * scale), _mm_set1_ps(ws[k][i / 16] * scale))
                               : _mm256_set1_ps(ws[k][i / kGroup] * scale);
        sums[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), d, sums[k]);
      }
    }
    for (int k = 0; k < 4; ++k) out[r + k] = reduce_add(sums[k]) + int8_dot(w[k], ws[k], group, in, whole, m.cols);
  }
#endif
  for (; r < end; ++r) out[r] = int8_dot(row(r), row_scales(r), group, in, 0, m.cols);
  if (m.bias)
    for (r = begin; r < end; ++r) out[r] += m.bias[r];
}

// int4 steps (0..15) are unsigned already: they are vpdpbusd's first operand as they are, the input's steps its second.
template <>
void integer_rows<Int4>(const Matrix& m, int64_t begin, int64_t end, const Rounded& in, float* out) {
  const int64_t groups = m.cols / kGroup;
  auto row_q = [&](int64_t r) { return static_cast<const uint8_t*>(m.data) + r * m.row_bytes; };
  auto row_dm = [&](int64_t r) { return m.pairs + r * groups * 2; };
  int64_t r = begin;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  // Four groups (64 bytes) per step: the low nibbles of the 64 bytes are the four groups' first halves and the
  // high nibbles their second halves, which the input's `quads` order matches, so one load, two masks and a shift
  // feed two vpdpbusd (1536 x 576 and 576 x 1536 products in the cache, one thread: 46 -> 38-40 us and 35 -> 26-31
  // us against two groups per step). A pair of groups left over: their 128-bit halves go to lanes (0, 1) and
  // (2, 3), and lanes 1 and 3 take the high nibbles, which puts each step beside its input's.
  const int64_t quads = groups / 4 * 4, paired = groups / 2 * 2;
  const __m512i zero = _mm512_setzero_si512(), nibble = _mm512_set1_epi8(15);
  const __m512i first_d_then_second = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i each_d = _mm512_set_epi32(6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
  for (; r + 4 <= end; r += 4) {
    const uint8_t* q[4] = {row_q(r), row_q(r + 1), row_q(r + 2), row_q(r + 3)};
    const c10::Half* dm[4] = {row_dm(r), row_dm(r + 1), row_dm(r + 2), row_dm(r + 3)};
    const char* pairs_ahead = reinterpret_cast<const char*>(dm[0]) + kPrefetch / 4;  // 4 bytes per 16 of steps
    __m512 sums[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    // the minimums' share: the four groups' (d, m) pairs times the input's (0, s * sum(q)) pairs
    __m256 minimums[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t g = 0; g < quads; g += 4) {
      __m512i first_halves = _mm512_loadu_si512(in.quads.data() + g * kGroup);
      __m512i second_halves = _mm512_loadu_si512(in.quads.data() + g * kGroup + 64);
      __m512 scale = _mm512_loadu_ps(in.quad_scales.data() + g * 4);
      __m256 step_sums = _mm256_loadu_ps(in.pair_sums.data() + 2 * g);
      for (int k = 0; k < 4; ++k) {
        prefetch(q[0] + kPrefetch + 64 * (g + k));
        if (k == 0) prefetch(pairs_ahead + 16 * g);  // the four rows' pairs of four groups: one line
        __m512i bytes = _mm512_loadu_si512(q[k] + g * 16);
        __m512i low = _mm512_and_si512(bytes, nibble), high = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
        __m512i dots = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, low, first_halves), high, second_halves);
        __m256 pairs = four_pairs(dm[k] + 2 * g);  // (d, m) of four groups
        __m512 d = _mm512_permutexvar_ps(each_d, _mm512_castps256_ps512(pairs));
        sums[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(d, scale), sums[k]);
        minimums[k] = _mm256_fmadd_ps(pairs, step_sums, minimums[k]);
      }
    }
    for (int64_t g = quads; g < paired; g += 2) {
      __m512i steps = _mm512_loadu_si512(in.q.data() + g * kGroup);
      __m512 scale = _mm512_loadu_ps(in.scales.data() + g * 8);
      __m256 step_sums = _mm256_zextps128_ps256(_mm_loadu_ps(in.pair_sums.data() + 2 * g));
      prefetch(pairs_ahead + 16 * g);
      for (int k = 0; k < 4; ++k) {
        if (k < 2) prefetch(q[0] + kPrefetch + 64 * (g + k));
        __m128 pairs = two_pairs(dm[k] + 2 * g);
        minimums[k] = _mm256_fmadd_ps(_mm256_zextps128_ps256(pairs), step_sums, minimums[k]);
        __m512i bytes = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[k] + g * 16)));
        __m512i doubled = _mm512_shuffle_i64x2(bytes, bytes, 0x50);  // lanes 0, 0, 1, 1
        __m512i weights = _mm512_and_si512(_mm512_mask_srli_epi16(doubled, 0xFF00FF00, doubled, 4), nibble);
        __m512i dots = _mm512_dpbusd_epi32(zero, weights, steps);
        __m512 d = _mm512_permutexvar_ps(first_d_then_second, _mm512_castps128_ps512(pairs));
        sums[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(d, scale), sums[k]);
      }
    }
    if (paired < groups) prefetch(q[0] + kPrefetch + 64 * paired), prefetch(pairs_ahead + 16 * paired);
    for (int k = 0; k < 4; ++k) sums[k] = _mm512_add_ps(sums[k], _mm512_zextps256_ps512(minimums[k]));
    _mm_storeu_ps(out + r, four_sums(sums));
    if (paired < groups)
      for (int k = 0; k < 4; ++k) out[r + k] += int4_dot(q[k], dm[k], in, paired, groups) + minimums_share(dm[k], in, paired, groups);
  }
#elif defined(__AVX2__)
  const __m256i nibble = _mm256_set1_epi8(15);
  for (; r + 4 <= end; r += 4) {
    const uint8_t* q[4] = {row_q(r), row_q(r + 1), row_q(r + 2), row_q(r + 3)};
    const c10::Half* dm[4] = {row_dm(r), row_dm(r + 1), row_dm(r + 2), row_dm(r + 3)};
    const char* pairs_ahead = reinterpret_cast<const char*>(dm[0]) + kPrefetch / 4;
    __m256 sums[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t g = 0; g < groups; ++g) {
      prefetch(q[0] + kPrefetch + 64 * g);  // four rows' 16 bytes of each group
      if (g % 4 == 0) prefetch(pairs_ahead + 16 * g);
      __m256i steps = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in.q.data() + g * kGroup));
      float scale = in.scale(g);
      for (int k = 0; k < 4; ++k) {
        __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q[k] + g * 16));
        __m256i weights = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes), nibble);
        __m256i dots = dot_u8s8(weights, steps);
        sums[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), _mm256_set1_ps(dm[k][2 * g] * scale), sums[k]);
      }
    }
    const int64_t whole = groups / 4 * 4;  // the minimums' share, four groups' (d, m) pairs at a time
    for (int k = 0; k < 4; ++k) {
      for (int64_t g = 0; g < whole; g += 4)
        sums[k] = _mm256_fmadd_ps(four_pairs(dm[k] + 2 * g), _mm256_loadu_ps(in.pair_sums.data() + 2 * g), sums[k]);
      out[r + k] = reduce_add(sums[k]) + minimums_share(dm[k], in, whole, groups);
    }
  }
#endif
  for (; r < end; ++r) out[r] = int4_dot(row_q(r), row_dm(r), in, 0, groups) + dot(row_dm(r), in.pair_sums.data(), 2 * groups);
  if (m.bias)
    for (r = begin; r < end; ++r) out[r] += m.bias[r];
}

// Rows [begin, end) of any weights times the input: the integer products for int8 and int4, the float ones else.
// An int4 stack may hold int8 matrices (a GGUF file's 5-8-bit ones, see step_layout): an input rounded for int4
// holds what int8 rows read, so such a matrix takes the int8 product of the same input.
template <typename W>
void product_rows(const Matrix& m, int64_t begin, int64_t end, const Rounded& in, float* out) {
  if constexpr (std::is_same_v<W, Int4>) {
    if (!m.pairs) return integer_rows<int8_t>(m, begin, end, in, out);
  }
  if constexpr (kInteger<W>) integer_rows<W>(m, begin, end, in, out);
#ifdef __AVX512BF16__
  else if constexpr (std::is_same_v<W, c10::BFloat16>) bfloat16_rows(m, begin, end, in.bfloat16.data(), out);
#endif
  else rows<W>(m, begin, end, in.x, out);
}

// A norm's weights as the model holds them, float32 or bfloat16, widened (exactly) as they are read: converting a
// bfloat16 model's 61 norms to float32 tensors was half of each step's setup (SmolLM2, 0.13 ms of it, one thread).
// `offset` is added to each weight as it is read: 1 for Gemma, whose checkpoints store each norm's scale as its
// offset from one (the scale is 1 + w, computed in float32 as its reference computes it), else 0. With a `bias` (of
// the weights' dtype) the norm is a LayerNorm: the values centred on their mean before they are scaled, the bias
// added after (StarCoder2's); `centred` without one makes a LayerNorm without a bias (Cohere's).
struct NormWeights {
  const void* data;
  bool bf16;
  float offset = 0.f;
  const void* bias = nullptr;
  bool centred = false;
};

template <typename N>
void apply_norm(const float* x, const N* weight, const N* bias, float offset, float eps, float* out, int64_t n,
                bool centred = false) {
  float mean = 0.f, squares = 0.f;
  if (bias || centred) {
#pragma omp simd reduction(+ : mean)
    for (int64_t i = 0; i < n; ++i) mean += x[i];
    mean /= n;
  }
#pragma omp simd reduction(+ : squares)
  for (int64_t i = 0; i < n; ++i) squares += (x[i] - mean) * (x[i] - mean);
  float inv = 1.f / std::sqrt(squares / n + eps);
  for (int64_t i = 0; i < n; ++i)
    out[i] = (x[i] - mean) * inv * (offset + as_float(weight[i])) + (bias ? as_float(bias[i]) : 0.f);
}

// x normed into out (which may be x): an RMSNorm, or a LayerNorm where the norm has a bias.
void apply_norm(const float* x, NormWeights norm, float eps, float* out, int64_t n) {
  if (norm.bf16)
    apply_norm(x, static_cast<const c10::BFloat16*>(norm.data), static_cast<const c10::BFloat16*>(norm.bias),
               norm.offset, eps, out, n, norm.centred);
  else
    apply_norm(x, static_cast<const float*>(norm.data), static_cast<const float*>(norm.bias), norm.offset, eps, out, n,
               norm.centred);
}

// Where the step reads a norm's weights (and its bias, where it is a LayerNorm): the tensors themselves when they
// are float32 or bfloat16, of one dtype, and contiguous, else float32 copies that `converted` keeps for as long as
// the step reads them.
NormWeights norm_weights(const at::Tensor& norm, std::vector<at::Tensor>& converted, float offset = 0.f,
                         const at::Tensor& bias = at::Tensor(), bool centred = false) {
  if (norm.numel() == 0) return {nullptr, false, offset};  // none (OLMo 2's layer inputs)
  bool biased = bias.defined() && bias.numel() > 0;
  TORCH_CHECK(!biased || bias.numel() == norm.numel(), "openformers kernels: a norm's bias has ", bias.numel(),
              " values for its ", norm.numel(), " weights");
  auto type = norm.scalar_type();
  if ((type == at::kFloat || type == at::kBFloat16) && norm.is_contiguous() &&
      (!biased || (bias.scalar_type() == type && bias.is_contiguous())))
    return {norm.data_ptr(), type == at::kBFloat16, offset, biased ? bias.data_ptr() : nullptr, centred};
  converted.push_back(norm.to(at::kFloat).contiguous());
  const void* data = converted.back().data_ptr();
  if (biased) converted.push_back(bias.to(at::kFloat).contiguous());
  return {data, false, offset, biased ? converted.back().data_ptr() : nullptr, centred};
}

#ifdef __AVX512F__
// e^x for 16 values, within 2 ulp of std::exp: x = k ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' degree-7 expf
// polynomial, times 2^k by vscalefps, which gives denormals, 0 and inf past float's range without overflowing
// in between. A NaN stays NaN (vmaxps and vminps return their second operand when either is one). For the
// prompts' attention, whose probabilities are rounded to bfloat16 anyway.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(89.f), _mm512_max_ps(_mm512_set1_ps(-104.f), x));  // e^x: inf and 0 beyond
  __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);  // ln 2 in two parts: k * the first is exact
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, k);
}

// e^x for 8 doubles in [-104, 89] to ~2^-46 relative: x = k ln 2 + r (ln 2 in two parts, k times the first exact),
// e^r by its Taylor series to r^11 (|r| <= ln 2 / 2: the next term is under 7e-15), times 2^k by vscalefpd.
inline __m512d exp8_double(__m512d x) {
  __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(1.4426950408889634)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(0x1.62e42fee00000p-1), x);
  r = _mm512_fnmadd_pd(k, _mm512_set1_pd(0x1.a39ef35793c76p-33), r);
  constexpr double kInverseFactorials[] = {1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040,
                                           1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0};
  __m512d p = _mm512_set1_pd(kInverseFactorials[0]);
  for (int i = 1; i < 12; ++i) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(kInverseFactorials[i]));
  return _mm512_scalef_pd(p, k);
}

// e^x for 16 floats, correctly rounded but for 1 in ~1650, which are 1 ulp off (std::exp, glibc's expf: the same
// bits for 99.94% of 80 million values in [-100, 88]), computed in double and rounded once: a decoding step's
// SiLU and softmax take it, so that their outputs stay those of the scalar loops before, which std::exp made (the
// 2-ulp exp16 there changed the 6th greedy token of an int8 SmolLM2 prompt, a near tie with float32's).
inline __m512 exp16_rounded(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(89.f), _mm512_max_ps(_mm512_set1_ps(-104.f), x));  // as exp16
  // The halves moved as doubles' bits (vextractf64x4, vinsertf64x4: AVX-512F, where the float forms need DQ).
  __m256 low = _mm512_cvtpd_ps(exp8_double(_mm512_cvtps_pd(_mm512_castps512_ps256(x))));
  __m256 high_x = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
  __m256 high = _mm512_cvtpd_ps(exp8_double(_mm512_cvtps_pd(high_x)));
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(low)), _mm256_castps_pd(high), 1));
}
#endif

#ifdef __AVX512F__
// out[i] = f(v[i]) for a function of 16 values, 16 at a time, the last ones under a mask; out may be v.
template <typename F>
inline void map16(const float* v, float* out, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, f(_mm512_loadu_ps(v + i)));
  if (i < n) {
    __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, tail, f(_mm512_maskz_loadu_ps(tail, v + i)));
  }
}

// out[i] = f(a[i], b[i]) for a function of 16 pairs, 16 at a time, the last ones under a mask; out may be a.
template <typename F>
inline void map16_pairs(const float* a, const float* b, float* out, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, f(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  if (i < n) {
    __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, tail, f(_mm512_maskz_loadu_ps(tail, a + i), _mm512_maskz_loadu_ps(tail, b + i)));
  }
}

// tanh(u) as 1 - 2 / (e^2u + 1), which stays within [-1, 1] at both ends.
inline __m512 tanh16(__m512 u) {
  const __m512 one = _mm512_set1_ps(1.f);
  return _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.f), _mm512_add_ps(exp16_rounded(_mm512_add_ps(u, u)), one)));
}
#endif

// v[i] = e^v[i]: 16 at a time where the CPU has AVX-512 (a decoding step takes ~50k of them: SiLU's and the
// attention's, 3% of a bfloat16 step on one thread through std::exp).
inline void exp_in_place(float* v, int64_t n) {
#ifdef __AVX512F__
  return map16(v, v, n, exp16_rounded);
#endif
  for (int64_t i = 0; i < n; ++i) v[i] = std::exp(v[i]);
}

// x rounded to bfloat16 or half where `type` is one of them (a module's arithmetic in that dtype), else x.
inline float rounded_to(at::ScalarType type, float x) {
  if (type == at::kBFloat16) return static_cast<float>(c10::BFloat16(x));
  if (type == at::kHalf) return static_cast<float>(c10::Half(x));
  return x;
}

// SiLU(g) = g / (1 + e^-g), and GELU's tanh form, 0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3))) (Gemma's and
// StarCoder2's gelu_pytorch_tanh), 16 at a time where the CPU has AVX-512, else one at a time.
constexpr float kRoot2OverPi = 0.7978845608028654f, kCubic = 0.044715f;
#ifdef __AVX512F__
inline __m512 silu16(__m512 g) {
  return _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.f), exp16_rounded(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}

inline __m512 gelu_tanh16(__m512 g) {
  __m512 inner = _mm512_mul_ps(_mm512_set1_ps(kRoot2OverPi),
                               _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(kCubic), g), _mm512_mul_ps(g, g), g));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), g), _mm512_add_ps(_mm512_set1_ps(1.f), tanh16(inner)));
}
#endif
inline float silu(float g) { return g / (1.f + std::exp(-g)); }
inline float gelu_tanh(float g) { return 0.5f * g * (1.f + std::tanh(kRoot2OverPi * (g + kCubic * g * g * g))); }
inline float gelu_erf(float g) { return 0.5f * g * (1.f + std::erf(g * 0.70710678118654752f)); }

// An MLP's activation (Family::activation; StepWeights::set_activation's kind): SiLU, GELU's tanh form, the squared
// ReLU (Nemotron's and Arcee's relu2, relu(g)^2), xIELU (Apertus's, with each layer's learned values: Xielu), or
// GELU's exact (erf) form (GPT-NeoX's "gelu"; StepWeights::set_exact_gelu), or ReLU (OPT's; StepWeights::set_relu).
enum class Activation : int64_t {
  kSilu = 0, kGeluTanh = 1, kRelu2 = 2, kXielu = 3, kGeluErf = 4, kRelu = 5, kClampedSwiglu = 6
};

// xIELU's values for one layer, as its module computes them: alpha_p = softplus(its alpha_p), alpha_n = beta +
// softplus(its alpha_n), each rounded to the parameters' dtype (step_layers), beta and eps its stored constants.
struct Xielu {
  float alpha_p = 0.f, alpha_n = 0.f, beta = 0.f, eps = 0.f;
};

// xIELU(g) in torch's order of operations: alpha_p g g + beta g above 0, else (expm1(min(g, eps)) - g) alpha_n +
// beta g.
inline float xielu(float g, const Xielu& a) {
  if (g > 0.f) return a.alpha_p * g * g + a.beta * g;
  return (std::expm1(std::min(g, a.eps)) - g) * a.alpha_n + a.beta * g;
}

inline float relu2(float g) {
  float r = g > 0.f ? g : 0.f;
  return g != g ? g : r * r;  // (NaN stays NaN, as torch's relu keeps it)
}

// v[i] = tanh(v[i] / cap) * cap, as Gemma 2 bounds its attention scores and logits (torch's order of operations),
// but for -inf (a hidden position), which stays -inf.
inline void soft_cap_in_place(float* v, int64_t n, float cap) {
#ifdef __AVX512F__
  return map16(v, v, n, [cap](__m512 x) {
    const __m512 caps = _mm512_set1_ps(cap), minus_infinity = _mm512_set1_ps(-INFINITY);
    __mmask16 hidden = _mm512_cmp_ps_mask(x, minus_infinity, _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(hidden, _mm512_mul_ps(tanh16(_mm512_div_ps(x, caps)), caps), minus_infinity);
  });
#endif
  for (int64_t i = 0; i < n; ++i)
    if (v[i] != -INFINITY) v[i] = std::tanh(v[i] / cap) * cap;
}

// ALiBi (BLOOM's, Falcon-RW's; StepWeights::set_alibi): per query head a slope, and to each score of the head the
// bias slope x the key's position added, times `factor` (Falcon's 1 / sqrt(head_dim): its reference divides the
// biases with the scores), the product rounded to bfloat16 first where `bfloat16` is set (Falcon's reference
// multiplies in bfloat16, its slopes rounded to it too; a bfloat16 model's biases are bfloat16 either way). A key's
// position is counted over the positions its row's mask allows, as the layers count it (alibi_positions): a
// left-padded row is biased as the row alone. No slopes: no ALiBi.
struct Alibi {
  std::vector<float> slopes;
  bool bfloat16 = false;
  float factor = 1.f;
  // Head h's biases of positions [first, last] into bias[first..last], `position` each one's count.
  void biases(int64_t h, const float* position, int64_t first, int64_t last, float* bias) const {
    const float slope = slopes[h];
    for (int64_t t = first; t <= last; ++t) {
      float b = slope * position[t];
      if (bfloat16) b = static_cast<float>(c10::BFloat16(b));
      bias[t] = b * factor;
    }
  }
};

// Each cache position's count in [0, last] of the positions `allowed` marks before it (all of them where it is null),
// the key's position for ALiBi (the layers' cumulative sum of the mask less one; a hidden one's never read).
inline void alibi_positions(const uint8_t* allowed, int64_t last, std::vector<float>& position) {
  position.resize(last + 1);
  int64_t seen = 0;
  for (int64_t t = 0; t <= last; ++t) {
    position[t] = static_cast<float>(allowed ? seen : t);
    if (allowed && allowed[t]) ++seen;
  }
}

// One new query head's attention over the cached positions [first, last] of its key/value head, those `allowed`
// marks where it is given (a batch row's attention mask over the cache: its left padding is 0), its scores
// soft-capped at `cap` where that is above 0 (Gemma 2), `bias[t]` added to position t's scaled score where given
// (ALiBi's, attend_group).
template <typename C>
void attend(const float* q, const C* keys, const C* values, int64_t pos_stride, int64_t head_dim, int64_t first,
            int64_t last, std::vector<float>& scores, float* out, const uint8_t* allowed = nullptr, float cap = 0.f,
            const float* bias = nullptr, const float* sink = nullptr) {
  float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  scores.resize(last - first + 1);
  float top = sink ? *sink : -INFINITY;
  for (int64_t t = first; t <= last; ++t)
    scores[t - first] = allowed && !allowed[t] ? -INFINITY
                                               : dot(keys + t * pos_stride, q, head_dim) * scale + (bias ? bias[t] : 0.f);
  if (cap > 0.f) soft_cap_in_place(scores.data(), scores.size(), cap);
  for (float s : scores) top = std::max(top, s);
  for (auto& s : scores) s -= top;
  exp_in_place(scores.data(), scores.size());  // a hidden position's exp(-inf) is 0
  float total = sink ? std::exp(*sink - top) : 0.f;  // gpt-oss's sink: a share of the softmax that attends to nothing
  for (float s : scores) total += s;
  std::fill(out, out + head_dim, 0.f);
  for (int64_t t = first; t <= last; ++t) {
    if (allowed && !allowed[t]) continue;
    float p = scores[t - first] / total;
    const C* v = values + t * pos_stride;
#pragma omp simd
    for (int64_t i = 0; i < head_dim; ++i) out[i] += p * as_float(v[i]);
  }
}

#ifdef __AVX512F__
// attend for H query heads that share one key/value head (a GQA group), head_dim = 16 * D, with attend's arithmetic
// (each score through dot and exp_in_place, the same order of sums, so the outputs are attend's bit for bit and a
// batch's rows stay those of their sequences alone): each value is loaded once for the H heads, the H outputs stay in
// registers over all positions instead of being loaded and stored at each, and the values are prefetched while the
// scores are made (a batch's caches outgrow the CPU's: 8 rows of SmolLM2 at 64 positions read 22 MB of float32 keys and
// values a step). SmolLM2 int8, 8 rows, positions 40-72, one thread, CPU time: 3.25 -> 2.07 ms a step.
template <typename C, int D, int H>
void attend_heads(const float* q, const C* keys, const C* values, int64_t pos_stride, int64_t first, int64_t last,
                  std::vector<float>& scores, float* out, const uint8_t* allowed, float cap, const float* sinks) {
  constexpr int64_t head_dim = 16 * D;
  const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  int64_t count = last - first + 1, padded = (count + 15) / 16 * 16;
  scores.resize(H * padded);
  float top[H];
  for (int h = 0; h < H; ++h) top[h] = -INFINITY;
  for (int64_t t = first; t <= last; ++t) {
    float* s = scores.data() + (t - first);
    if (allowed && !allowed[t]) {
      for (int h = 0; h < H; ++h) s[h * padded] = -INFINITY;
      continue;
    }
    for (int64_t b = 0; b < head_dim * int64_t(sizeof(C)); b += 64) {
      prefetch(reinterpret_cast<const char*>(keys + (t + 4) * pos_stride) + b);
      prefetch(reinterpret_cast<const char*>(values + t * pos_stride) + b);
    }
    for (int h = 0; h < H; ++h) {
      s[h * padded] = dot(keys + t * pos_stride, q + h * head_dim, head_dim) * scale;
      top[h] = std::max(top[h], s[h * padded]);
    }
  }
  for (int h = 0; h < H; ++h) {
    float* s = scores.data() + h * padded;
    if (cap > 0.f) {  // (the capped scores' top is the capped top, but taken again it is theirs whatever the rounding)
      soft_cap_in_place(s, count, cap);
      top[h] = -INFINITY;
      for (int64_t i = 0; i < count; ++i) top[h] = std::max(top[h], s[i]);
    }
    if (sinks) top[h] = std::max(top[h], sinks[h]);
    for (int64_t i = 0; i < count; ++i) s[i] -= top[h];
    exp_in_place(s, count);
    float total = sinks ? std::exp(sinks[h] - top[h]) : 0.f;
    for (int64_t i = 0; i < count; ++i) total += s[i];
    for (int64_t i = 0; i < count; ++i) s[i] /= total;
  }
  __m512 acc[H][D];
  for (auto& per_head : acc)
    for (auto& a : per_head) a = _mm512_setzero_ps();
  for (int64_t t = first; t <= last; ++t) {
    if (allowed && !allowed[t]) continue;
    __m512 v[D];
    for (int d = 0; d < D; ++d) v[d] = load16(values + t * pos_stride + 16 * d);
    for (int h = 0; h < H; ++h) {
      __m512 p = _mm512_set1_ps(scores[h * padded + (t - first)]);
      for (int d = 0; d < D; ++d) acc[h][d] = _mm512_fmadd_ps(p, v[d], acc[h][d]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int d = 0; d < D; ++d) _mm512_storeu_ps(out + h * head_dim + 16 * d, acc[h][d]);
}
#endif

// `heads` query heads at q (head_dim apart) that share the key/value head at keys and values, over cached
// positions [first, last] (those `allowed` marks where it is given), into out (head_dim apart): attend_heads
// where head_dim is 64 or 128 (up to four heads at a time for 64, two for 128: the sums stay in registers), else
// attend per head; the scores soft-capped at `cap` where that is above 0; `sinks`, where given, each head's sink (one
// more score in its softmax's denominator, gpt-oss's).
template <typename C>
void attend_group(const float* q, int64_t heads, const C* keys, const C* values, int64_t pos_stride,
                  int64_t head_dim, int64_t first, int64_t last, std::vector<float>& scores, float* out,
                  const uint8_t* allowed = nullptr, float cap = 0.f, const Alibi* alibi = nullptr,
                  int64_t first_head = 0, const float* sinks = nullptr) {
  int64_t h = 0;
  if (alibi && !alibi->slopes.empty()) {  // a bias per head and position: attend a head at a time
    thread_local std::vector<float> position, bias;
    alibi_positions(allowed, last, position);
    bias.resize(last + 1);
    for (; h < heads; ++h) {
      alibi->biases(first_head + h, position.data(), first, last, bias.data());
      attend<C>(q + h * head_dim, keys, values, pos_stride, head_dim, first, last, scores, out + h * head_dim, allowed,
                cap, bias.data(), sinks ? sinks + h : nullptr);
    }
    return;
  }
#ifdef __AVX512F__
  auto run = [&](auto dims, auto group) {
    constexpr int D = decltype(dims)::value, H = decltype(group)::value;
    for (; h + H <= heads; h += H)
      attend_heads<C, D, H>(q + h * head_dim, keys, values, pos_stride, first, last, scores, out + h * head_dim, allowed,
                            cap, sinks ? sinks + h : nullptr);
  };
  using std::integral_constant;
  if (head_dim == 64) {
    run(integral_constant<int, 4>{}, integral_constant<int, 4>{});
    run(integral_constant<int, 4>{}, integral_constant<int, 3>{});  // SmolLM2's groups
    run(integral_constant<int, 4>{}, integral_constant<int, 2>{});
    run(integral_constant<int, 4>{}, integral_constant<int, 1>{});
  } else if (head_dim == 128) {
    run(integral_constant<int, 8>{}, integral_constant<int, 2>{});
    run(integral_constant<int, 8>{}, integral_constant<int, 1>{});
  }
#endif
  for (; h < heads; ++h)
    attend<C>(q + h * head_dim, keys, values, pos_stride, head_dim, first, last, scores, out + h * head_dim, allowed, cap,
              nullptr, sinks ? sinks + h : nullptr);
}

// Where the threads of one team meet: their claims on each loop's rows and a barrier.
//
// Rows are claimed in chunks, not split in fixed shares: on a CPU that also runs other work, a thread that the
// system deschedules in the middle of a product would hold every other thread at the next barrier for as long as
// it is away (with one core taken by a busy process, fixed shares decoded at 7% of the quiet speed). Each thread
// starts on its own share, claiming chunks from its front with an atomic counter that stays in its own cache, and
// when that is done takes what the others have not claimed of theirs. A waiter at the barrier spins briefly (a
// quiet team meets within microseconds) and then sleeps on a futex, giving its core back: the descheduled thread
// can then run there, instead of beside the busy process. A thread that reaches a barrier long after the first
// one did (kLate: it was descheduled, as a chunk takes microseconds) leaves the team instead of meeting it: the
// others claim its shares and meet without it for the rest of the step, where each meeting would otherwise wait
// again for a thread that runs part of the time.
struct alignas(64) Claim {
  std::atomic<int64_t> taken{0};  // rows claimed from one thread's share of one loop
};

inline int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Meeting {
  // The threads arrived at this barrier (low 32 bits) and those still in the team (high 32 bits), one word so that
  // an arrival and a departure each see the other.
  alignas(64) std::atomic<uint64_t> attendance;
  // wall_ns() of a barrier's first arrival, its lowest byte replaced by the generation's: a first thread's note that
  // lands after the barrier opened (the others arrived in between) then reads as an earlier barrier's.
  std::atomic<int64_t> first_arrival{255};  // no barrier's
  alignas(64) std::atomic<int> generation{0};  // how many times the team has met
  std::atomic<int> sleeping{0};
  std::atomic<int> finished{0}, leavers_asleep{0};  // the team's last meeting is over; who waits for that
  std::vector<Claim> claims;  // per loop (in the order every thread runs them), one per thread

  Meeting(int64_t loops, int64_t threads) : attendance(uint64_t(threads) << 32), claims(loops * threads) {}
};

constexpr uint64_t kMember = uint64_t(1) << 32;
inline int64_t arrivals(uint64_t attendance) { return static_cast<int64_t>(attendance & (kMember - 1)); }
inline int64_t members(uint64_t attendance) { return static_cast<int64_t>(attendance >> 32); }
// Far longer than a quiet team's wait at a barrier (one chunk: microseconds, ~100 us for a 7B model's rows), about
// what the system's scheduler gives a busy process before it runs another.
constexpr int64_t kLate = 500000;

// How long a waiter spins before it sleeps: well above a quiet team's wait at a barrier (one chunk's time), well
// below a time slice of the system's scheduler.
constexpr std::chrono::microseconds kSpin{20};

inline void pause() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

inline void sleep_while(std::atomic<int>& word, int value) {
#ifdef __linux__
  syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAIT_PRIVATE, value, nullptr, nullptr, 0);
#else
  std::this_thread::yield();
#endif
}

inline void wake_all(std::atomic<int>& word) {
#ifdef __linux__
  syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#endif
}

// 16 KB rather than kPrefetch's 4: SmolLM2 at two threads (five barriers a layer), 5.19-5.22 -> 5.01-5.25 ms a token
// bfloat16 and 9.53-10.01 -> 9.51-9.85 float32, rounds interleaved.
constexpr int64_t kSharePrefetch = 4 * kPrefetch;

// Rows per claim of a batch's products, and the fewest of a token's: a multiple of four (four_rows).
constexpr int64_t kChunk = 16;

// A token's products claim about kClaimBytes of weights at a time (at least kChunk rows): on a host whose two
// vCPUs sit far apart, SmolLM2 decoding at two threads read its weights at 0.71 of the bandwidth with 16 rows a
// claim (18 KB of a bfloat16 row of 576) and at 0.76 with 256 rows (float32 0.84 and 0.86), rounds of the two
// builds taking turns (benchmarks/turns.py); with the vCPUs close, the same either way. A descheduled thread holds
// one claim whatever its size, and a share's last claims still halve, so the threads finish together.
constexpr int64_t kClaimBytes = 256 << 10;

// Rows per claim of a product over weights stored in-major (in_major_rows): 1 KB of each input's bfloat16 row.
constexpr int64_t kInMajorChunk = 512;

inline int64_t claimed_rows(const Matrix& m) { return std::max(kChunk, kClaimBytes / m.row_bytes / 4 * 4); }

// Matrices that multiply one input, claimed as one loop over their rows stacked in order (a layer's q, k and v;
// its gate and up): each thread's share is then one stream where they lie one after another, as HugePagePlacement
// lays a layer's weights, where a share of each was two or three shorter ones.
struct Stacked {
  std::array<const Matrix*, 3> parts{};
  int64_t count = 0, rows = 0;

  Stacked(std::initializer_list<const Matrix*> matrices) {
    for (const Matrix* m : matrices)
      if (m->data) parts[count++] = m, rows += m->rows;  // (an MLP without a gate: StarCoder2's)
  }

  // f(part, begin, end) for each part's own rows within the stacked rows [begin, end).
  template <typename F>
  void split(int64_t begin, int64_t end, F&& f) const {
    for (int64_t part = 0, at = 0; part < count && at < end; at += parts[part++]->rows) {
      int64_t from = std::max(begin, at), to = std::min(end, at + parts[part]->rows);
      if (from < to) f(part, from - at, to - at);
    }
  }
};

// One thread's view of the team that runs one step.
struct Team {
  int64_t index, size;
  Meeting& meeting;
  int64_t loop = 0;   // loops begun: every thread runs the same ones in the same order
  bool left = false;  // this thread left the team: it claims no rows and meets no one for the rest of it

  // Thread `owner`'s share of [0, count): where it starts claiming (a multiple of `multiple`).
  std::pair<int64_t, int64_t> share(int64_t count, int64_t multiple = 4, int64_t owner = -1) const {
    int64_t per = (count + multiple * size - 1) / (multiple * size) * multiple;
    int64_t begin = std::min((owner < 0 ? index : owner) * per, count);
    return {begin, std::min(begin + per, count)};
  }

  // work(begin, end) over chunks of [0, count) until every chunk is done: this thread's share first, then what is
  // left of the others'. A share's last chunks are smaller (half of what is left, down to `multiple`), so that the
  // threads run out of rows closer together before the barrier that follows most loops.
  template <typename F>
  void claim(int64_t count, int64_t chunk, int64_t multiple, F&& work) {
    Claim* claims = &meeting.claims[loop++ * size];
    if (left) return;
    for (int64_t k = 0; k < size; ++k) {
      int64_t owner = (index + k) % size;
      auto [begin, end] = share(count, multiple, owner);
      std::atomic<int64_t>& taken = claims[owner].taken;
      for (int64_t done = taken.load(std::memory_order_relaxed); begin + done < end;) {
        int64_t rest = end - begin - done;
        int64_t rows = rest >= 2 * chunk ? chunk : std::max(multiple, (rest / 2 + multiple - 1) / multiple * multiple);
        if (!taken.compare_exchange_weak(done, done + rows, std::memory_order_relaxed)) continue;  // done: reread
        work(begin + done, std::min(begin + done + rows, end));
        done = taken.load(std::memory_order_relaxed);
      }
    }
  }

  // claim for a token's product: work(begin, end) over m's rows, claimed_rows(m) of them a claim.
  template <typename F>
  void claim_rows(const Matrix& m, F&& work) {
    claim(m.rows, claimed_rows(m), 4, std::forward<F>(work));
  }

  template <typename W>
  void product(const Matrix& m, const Rounded& in, float* out) {
    claim_rows(m, [&](int64_t begin, int64_t end) { product_rows<W>(m, begin, end, in, out); });
  }

  // Every thread's writes before it are seen by every thread after it (a thread that leaves here included).
  void wait() {
    if (left) return;
    int generation = meeting.generation.load(std::memory_order_acquire);
    if (size > 1) {
      int64_t first = meeting.first_arrival.load(std::memory_order_relaxed);
      if ((first & 255) == (generation & 255) && wall_ns() - first > kLate && leave()) return;
    }
    uint64_t attendance = meeting.attendance.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (arrivals(attendance) == members(attendance)) return open(attendance);
    if (arrivals(attendance) == 1)
      meeting.first_arrival.store((wall_ns() & ~int64_t(255)) | (generation & 255), std::memory_order_relaxed);
    auto started = std::chrono::steady_clock::now();
    for (int spins = 1; meeting.generation.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins % 64 == 0 && std::chrono::steady_clock::now() - started > kSpin) {
        meeting.sleeping.fetch_add(1, std::memory_order_seq_cst);
        while (meeting.generation.load(std::memory_order_seq_cst) == generation) sleep_while(meeting.generation, generation);
        meeting.sleeping.fetch_sub(1, std::memory_order_relaxed);
        return;
      }
      pause();
    }
  }

  // The barrier's last thread lets the others go on.
  void open(uint64_t attendance) {
    meeting.attendance.fetch_sub(arrivals(attendance), std::memory_order_relaxed);
    meeting.generation.fetch_add(1, std::memory_order_seq_cst);
    if (meeting.sleeping.load(std::memory_order_seq_cst) > 0) wake_all(meeting.generation);
  }

  // Leaves the team unless this is its last thread; opens the barrier where all the others are waiting at it.
  bool leave() {
    uint64_t attendance = meeting.attendance.load(std::memory_order_relaxed);
    do {
      if (members(attendance) <= 1) return false;
    } while (!meeting.attendance.compare_exchange_weak(attendance, attendance - kMember, std::memory_order_acq_rel));
    attendance -= kMember;
    left = true;
    if (arrivals(attendance) > 0 && arrivals(attendance) == members(attendance)) open(attendance);
    return true;
  }

  // After the team's last meeting: the threads that stayed tell those that left, which sleep until then (OpenMP's
  // closing barrier would have them spin beside the others).
  void finish() {
    if (!left) {
      meeting.finished.store(1, std::memory_order_seq_cst);
      if (meeting.leavers_asleep.load(std::memory_order_seq_cst) > 0) wake_all(meeting.finished);
      return;
    }
    meeting.leavers_asleep.fetch_add(1, std::memory_order_seq_cst);
    while (meeting.finished.load(std::memory_order_seq_cst) == 0) sleep_while(meeting.finished, 0);
  }

  // Called before a barrier: the next matrix's first kSharePrefetch bytes are on their way while the other
  // threads finish, instead of stalling the start of the next phase (the in-loop prefetch only reaches kPrefetch
  // ahead, and the hardware's prefetchers take up a new stream only after its first lines).
  void prefetch_share(const Matrix& m, int64_t multiple = 4) const {
    auto [begin, end] = share(m.rows, multiple);
    const char* first = static_cast<const char*>(m.data) + begin * m.row_bytes;
    int64_t bytes = std::min((end - begin) * m.row_bytes, kSharePrefetch);
    for (int64_t b = 0; b < bytes; b += 64) prefetch(first + b);
  }

  // claim for a token's products of stacked matrices: work(part, begin, end) over each part's rows.
  template <typename F>
  void claim_rows(const Stacked& s, F&& work) {
    claim(s.rows, claimed_rows(*s.parts[0]), 4, [&](int64_t begin, int64_t end) { s.split(begin, end, work); });
  }

  // prefetch_share for stacked matrices: the first kSharePrefetch bytes of this thread's share of their rows.
  void prefetch_share(const Stacked& s) const {
    auto [begin, end] = share(s.rows, 4);
    int64_t left = kSharePrefetch;
    s.split(begin, end, [&](int64_t part, int64_t from, int64_t to) {
      if (left <= 0) return;
      const Matrix& m = *s.parts[part];
      const char* first = static_cast<const char*>(m.data) + from * m.row_bytes;
      int64_t bytes = std::min((to - from) * m.row_bytes, left);
      for (int64_t b = 0; b < bytes; b += 64) prefetch(first + b);
      left -= bytes;
    });
  }
};

// How many threads the next teams leave out of those they ask for, and when to try one more.
//
// Claimed chunks and sleeping waiters keep a team going when one of its threads is descheduled, but the team
// still meets at every barrier (some 200 times a step), and each meeting waits for a thread that the system runs
// only part of the time: with one of two cores taken by a busy process, two threads decoded at 24-34% of the
// quiet speed, one thread alone at 55-65%. So each team measures how much of its threads' time they did not run
// (wall time less the thread's CPU time: descheduled, or asleep at a barrier waiting for one that was), and when
// that is over kCrowded for kCrowdedTeams teams in a row, the next teams leave one thread more out (one
// descheduled moment of one thread, ~30 ms on a quiet machine, crowds a single long team: shrinking on it put
// half of a quiet batch-8 run's steps on one thread). After `patience` teams, or as many times kPatiencePerTeam
// of wall time if that passes first, one of them tries one thread more; if that one is crowded too, the wait
// before the next try doubles (up to kMostPatience, so a crowded CPU pays for a try once every 128 tokens), and if
// it is not, the team keeps the thread. The wall time is for callers of long teams (a padded batch's prompt is one
// of ~0.1 s), where a decoding loop's 15 teams pass in ~0.1 s: counted in teams alone, 8 x 16-token int8 prompts
// ran 10 s at one thread after 8 s beside a busy core 0 had doubled the patience, 0.7 s with the time. The row
// sums do not depend on how many threads claim the rows, so the outputs are the same whatever the team's size.
// The state is shared by every team of the process (steps, heads, prompts' products), without locks: a
// race between two callers only makes one decision late.
//
// A decoding loop can hold torch's own threads to the team's size while it is crowded (kernels/llama.py,
// `threads_following_team`): `requested` is then what the teams ask for, the caller's setting, where
// at::get_num_threads() would stay at the shrunk size and no team would try more threads again.
struct Crowding {
  std::atomic<int> requested{0};     // threads a team asks for; 0: at::get_num_threads()
  std::atomic<int> left_out{0};
  std::atomic<int> teams_to_try{0};  // teams at this size before one tries one thread more
  std::atomic<int64_t> try_at{0};    // wall_ns() from which a team tries one thread more, whatever teams_to_try says
  std::atomic<int> patience{0};      // teams_to_try after the next crowded team
  std::atomic<int> last_size{0};     // threads of the team that ran last (for tests)
  std::atomic<int> crowded_in_a_row{0};  // teams at the settled size found crowded since the last uncrowded one
};
Crowding crowding;

// Quiet, a team's threads do not run for a few percent of their time (waking up, the odd spin that outlasts
// kSpin); beside a busy process, half of it or more.
constexpr double kCrowded = 0.25;
// In teams: a token is one (decode_step runs the head's product in the step's team) or two where the head
// multiplies apart (a batch's step, the first token of a loop); odd numbers make those tries alternate between them.
constexpr int kFirstPatience = 15, kMostPatience = 255;
// The wall time that stands for one team of patience: about a token of a crowded decode.
constexpr int64_t kPatiencePerTeam = 10'000'000;
// Crowded teams in a row that make the next ones smaller; a team that tries one thread more decides alone.
constexpr int kCrowdedTeams = 2;

inline int64_t thread_cpu_ns() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

// Leaves `left_out` threads out of the next `teams` teams or `seconds`, whichever pass first (then one tries one
// thread more), as after a crowded team: lets tests see a shrunk team grow back.
void crowd_team(int64_t left_out, int64_t teams, double seconds) {
  crowding.left_out = static_cast<int>(left_out);
  crowding.teams_to_try = static_cast<int>(teams);
  crowding.try_at = wall_ns() + static_cast<int64_t>(seconds * 1e9);
  crowding.patience = kFirstPatience;
  crowding.crowded_in_a_row = 0;
}

int64_t team_threads() { return crowding.last_size.load(); }

// Teams ask for `threads` from here on whatever torch's setting (0: at::get_num_threads(), as by default).
void request_team(int64_t threads) {
  TORCH_CHECK(threads >= 0, "request_team: threads must be >= 0 (0: torch's setting), got ", threads);
  crowding.requested = static_cast<int>(threads);
}

int teams_request() {
  int requested = crowding.requested.load(std::memory_order_relaxed);
  return requested > 0 ? requested : at::get_num_threads();
}

// The threads of the next team that does not try one more: the team's size while it is crowded.
int64_t settled_team_threads() {
  int requested = teams_request();
  return requested - std::min(crowding.left_out.load(std::memory_order_relaxed), requested - 1);
}

// Torch's own thread setting made the size the teams have settled on, after a step of a decoding loop that holds
// torch's threads to the team's (kernels/llama.py, threads_following_team): here, at the step's end, where a call of
// settled_team_threads after each step was one more operation a token (~40 us after the step flushed the caches).
void follow_team_size() {
  int threads = static_cast<int>(settled_team_threads());
  if (threads != at::get_num_threads()) at::set_num_threads(threads);
}

// Runs body(team) on the requested threads (Crowding) less those Crowding leaves out, for `loops` claimed loops in
// all, all threads leaving together (OpenMP's own closing barrier spins without giving the core back).
template <typename F>
void in_team(int64_t loops, F&& body) {
  int requested = teams_request();
  int left_out = std::min(crowding.left_out.load(std::memory_order_relaxed), requested - 1);
  bool trying = left_out > 0 && (crowding.teams_to_try.fetch_sub(1, std::memory_order_relaxed) <= 1 ||
                                  wall_ns() >= crowding.try_at.load(std::memory_order_relaxed));
  int threads = requested - left_out + (trying ? 1 : 0);
  crowding.last_size.store(threads, std::memory_order_relaxed);
  Meeting meeting(loops, threads);
  if (threads == 1) {
    Team team{0, 1, meeting};
    return body(team);
  }
  std::atomic<int64_t> away{0}, present{0};  // the threads' nanoseconds not running, and in all
#pragma omp parallel num_threads(threads)
  {
    int64_t wall = wall_ns(), cpu = thread_cpu_ns();
    Team team{omp_get_thread_num(), omp_get_num_threads(), meeting};
    body(team);
    team.wait();
    team.finish();
    wall = wall_ns() - wall;
    away.fetch_add(wall - (thread_cpu_ns() - cpu), std::memory_order_relaxed);
    present.fetch_add(wall, std::memory_order_relaxed);
  }
  bool crowded = away.load() > kCrowded * present.load();
  if (!trying) {
    if (!crowded) {
      crowding.crowded_in_a_row.store(0, std::memory_order_relaxed);
      return;
    }
    if (crowding.crowded_in_a_row.fetch_add(1, std::memory_order_relaxed) + 1 < kCrowdedTeams) return;
  }
  crowding.crowded_in_a_row.store(0, std::memory_order_relaxed);
  int patience = crowding.patience.load(std::memory_order_relaxed);
  if (crowded) {
    patience = trying ? std::min(2 * patience + 1, kMostPatience) : kFirstPatience;
    crowding.left_out.store(std::min(requested - threads + 1, requested - 1), std::memory_order_relaxed);
  } else {  // a team that tried one thread more and was not crowded keeps it
    patience = kFirstPatience;
    crowding.left_out.store(requested - threads, std::memory_order_relaxed);
  }
  crowding.patience.store(patience, std::memory_order_relaxed);
  crowding.teams_to_try.store(patience, std::memory_order_relaxed);
  crowding.try_at.store(wall_ns() + patience * kPatiencePerTeam, std::memory_order_relaxed);
}

// Buffers of one step that every thread reads or writes a part of.
struct Shared {
  std::vector<float> q, k, v, attended, out, gate, up;
  std::vector<float> router, mixed;  // a mixture's router scores, and its chosen experts' outputs (mixture_step)
  std::vector<float> shared_factors;  // per row, the factor of its shared expert's output (Qwen2-MoE; router_scores)
  // Per key head, its rows made so far in this layer: the chunk that completes a head rotates and caches it (a
  // token's q, k and v are claimed as one loop of rows, so a head's may fall in two threads' chunks).
  std::unique_ptr<std::atomic<int64_t>[]> key_rows_made{};
  // A per-head fused q/k/v's product (Layer::qkv_per_head), its heads' rows taken apart from here; empty otherwise.
  std::vector<float> qkv{};
};

// A sparse layer's mixture of experts (Mixtral, Qwen3-MoE) in place of its gate, up and down: the router's matrix,
// float32 or bfloat16 (quantization leaves it in floating point: its errors would change which experts run), and
// each expert's gate, up and down weights with their scales, of which a step reads those the router picks. Qwen2-MoE's
// layers add a shared expert that every token runs: the layer's own gate, up and down, its output scaled by the
// sigmoid of `shared_gate` (one row, of the router's dtype) times the same input; without a gate (Granite MoE
// shared's, ERNIE 4.5 MoE's, Hunyuan-MoE's), its output added as it is.
struct Mixture {
  Matrix router{}, shared_gate{};  // shared_gate: null data where the layer has no shared expert
  bool router_bf16 = false;
  const at::Tensor* weights = nullptr;  // 3 an expert: gate, up, down
  const at::Tensor* scales = nullptr;   // as many, or null (float weights)
  int64_t experts = 0;                  // 0: a dense layer
  int64_t width = 0;                    // each expert's intermediate size
  int64_t top_k = 0;
  bool normalize = false;      // the chosen experts' weights renormalized to sum to 1 (Mixtral, Qwen3-MoE's option)
  bool round_weights = false;  // and rounded to bfloat16 before weighting (Qwen3-MoE in bfloat16, as it rounds them)
  // ERNIE 4.5 MoE's (StepWeights::set_expert_choice): the experts chosen by their probabilities plus a correction
  // bias per expert (`correction`; null: by the probabilities), weighted by the probabilities alone; `norm_min`, the
  // renormalizing sum clamped below (its moe_norm_min; 0 leaves the sum as it is).
  const float* correction = nullptr;
  float norm_min = 0.f;
  // DeepSeek-V3's (StepWeights::set_expert_groups; GLM-4.5's, dots.llm1's): the experts scored by the sigmoid of the
  // router's logits rather than their softmax (`sigmoid`); the choice limited to the experts of the `chosen_groups`
  // best of `groups` equal groups in order, a group ranked by the sum of its `group_best` best ranked scores (the
  // scores plus any correction); and the chosen weights multiplied by `scale` (routed_scaling_factor) after their
  // renormalization.
  bool sigmoid = false;
  int64_t groups = 1, chosen_groups = 1, group_best = 1;
  float scale = 1.f;

  // gpt-oss's experts (StepWeights::set_expert_layout): each expert's gate and up one matrix whose rows alternate
  // between the two (its gate weight, 2 * width rows; its up weight empty), read `in_major` where the weights are
  // stored (in, out) (gpt-oss's float stacks: in_major_rows); `biases`, per expert its gate/up's and down's float32
  // biases, or null.
  bool paired_gate_up = false, in_major = false;
  const at::Tensor* biases = nullptr;
  // PhiMoE's sparsemixer at inference (StepWeights::set_sparsemixer): each pick the best expert not yet picked,
  // weighted by the softmax over those not yet picked whose scores are within a relative 2 * sparsemixer_eps of its own.
  bool sparsemixer = false;
  float sparsemixer_eps = 0.f;
};
constexpr int64_t kMostChosenExperts = 64;

struct Layer {
  Matrix q, k, v, o, gate, up, down;
  NormWeights attn_norm, mlp_norm;  // the norms of the attention's input and the MLP's
  at::Tensor keys, values;
  // Qwen3's and Gemma 3's RMSNorms over each head's queries and keys before the rotation, one weight for every head;
  // null data where the family has none
  NormWeights q_norm{nullptr, false}, k_norm{nullptr, false};
  // OLMo 2's: q_norm and k_norm over all of the queries and all of the keys at once, not over each head
  bool whole_qk_norms = false;
  // StableLM 2 12B's and Command R+'s (StepWeights::set_qk_norms_per_head): q_norm and k_norm hold a row of head_dim
  // weights (and biases) for each head, each head normed by its own row (norm_of_head)
  bool qk_norms_per_head = false;
  // Gemma's norms of the attention's and the MLP's outputs before each is added to the residual stream ("sandwich"
  // norms); null data where the family has none
  NormWeights attn_out_norm{nullptr, false}, mlp_out_norm{nullptr, false};
  int64_t window = 0;  // keys at most this far behind the query are attended (0: all)
  bool local = false;  // rotated by the sliding layers' own tables (Gemma 3's rope_local_base_freq)
  bool rotates = true;  // false: queries and keys attend as projected (SmolLM3's unrotated layers, set_unrotated)
  // The layer's own factor on its attention scores over the family's scale, taken by its queries with the family's
  // query_factor (GPT-2's scale_attn_by_inverse_layer_idx: 1 / (layer + 1); StepWeights::set_layer_attention_scales)
  float attention_scale = 1.f;
  Mixture mixture;     // experts in place of gate, up and down, where mixture.experts > 0
  // GPT-NeoX's fused q/k/v (StepWeights::set_qkv_per_head): one weight whose rows hold each head's query, key and
  // value in turn, multiplied whole into Shared::qkv and taken apart a head at a time (q, k and v then span its rows
  // only to say their sizes and to prefetch them).
  Matrix qkv{};
  bool qkv_per_head = false;
  // CodeGen's (StepWeights::set_qkv_blocks): blocks of qkv_block_heads heads' queries, then their keys, then their
  // values (their values, then their keys, with qkv_values_first); GPT-NeoX's blocks are of one head each.
  int64_t qkv_block_heads = 1;
  bool qkv_values_first = false;
  // Falcon's new decoder architecture: each key/value head's block holds qkv_group query heads, then its key and its
  // value (1: as many query heads as key heads, GPT-NeoX's and CodeGen's blocks).
  int64_t qkv_group = 1;
  Xielu xielu;         // the layer's xIELU values, where the family's activation is xIELU
  const float* sinks = nullptr;  // gpt-oss's sink per query head, float32 (StepWeights::set_sinks), or null
};

// Where head h's query (part 0), key (1) or value (2) is in a fused q/k/v's product `made` (Layer::qkv_per_head).
// Head h is a query head for part 0, else a key/value head; a block's queries are qkv_group times its key heads.
inline const float* qkv_part(const Layer& L, const float* made, int64_t h, int part, int64_t head_dim) {
  const int64_t block = L.qkv_block_heads, slot = part == 0 ? 0 : (part == 1) != L.qkv_values_first ? 1 : 2;
  const int64_t queries = block * L.qkv_group, heads = part == 0 ? queries : block;
  return made + ((h / heads) * (queries + 2 * block) + (slot == 0 ? 0 : queries + (slot - 1) * block) + h % heads) *
                    head_dim;
}

// What a family computes differently from Llama, the same for all its layers (StepWeights::set_family): the MLP's
// activation, the queries' scale where it is not 1 / sqrt(head_dim) (Gemma's query_pre_attn_scalar), in a factor
// the queries are multiplied by after their rotation, and Gemma 2's soft-cap on the attention scores.
struct Family {
  Activation activation = Activation::kSilu;  // the MLP's (StepWeights::set_family's gelu, set_activation)
  float query_factor = 1.f;
  float attention_cap = 0.f;  // scores become tanh(score / cap) * cap where above 0
  // Each branch's output is multiplied by it before it joins the residual stream (Granite's residual_multiplier);
  // 1 leaves every other family's sums as they were, bit for bit.
  float residual_factor = 1.f;
  // The leading dimensions of each head that the rotary tables turn (their width): all of them, or fewer (Phi-4-mini's
  // partial_rotary_factor of 0.75), the rest passing unrotated; set by each call from its tables (rotary_width).
  int64_t rotary_dims = 0;
  // Whether a row that its mask leaves no position (a prompt's padding) attends to all of its sequence's positions
  // evenly, as the layers' eager attention gives it, rather than to none (zeros, their sdpa's); set by each call.
  bool padding_averages = false;
  // Whether the pairs turned are (2i, 2i + 1), GPT-J's form (ERNIE 4.5's, GLM's and Helium's;
  // StepWeights::set_interleaved), rather than Llama's (i, i + half); whether each head's q/k norms come after the
  // rotation rather than before it (Hunyuan's; StepWeights::set_norms_after_rotation).
  bool interleaved = false, norms_after_rotation = false;
  // Whether the MLP reads the layer's input (normed by its own norm, or by the attention's where the two are one
  // tensor) rather than the residual after attention: both branches join the residual together (GPT-NeoX's
  // use_parallel_residual, Phi's, GPT-J's, Cohere's; StepWeights::set_parallel).
  bool parallel = false;
  // Queries, keys and values clamped to [-clip_qkv, clip_qkv] after their projections (and the queries' and keys'
  // norms before the rotation), where above 0: OLMo's and OLMoE's clip_qkv (StepWeights::set_clip_qkv).
  float clip_qkv = 0.f;
  // ALiBi's biases on the attention scores (StepWeights::set_alibi; no slopes: none).
  Alibi alibi;
  // gpt-oss's clamped SwiGLU (Activation::kClampedSwiglu; StepWeights::set_clamped_swiglu): (clamp(up, -limit, limit)
  // + 1) * g * sigmoid(alpha * g), g = min(gate, limit).
  float swiglu_alpha = 0.f, swiglu_limit = 0.f;
};

// v clamped to the family's clip_qkv (a NaN stays NaN, as torch's clamp keeps it).
inline float clipped(const Family& F, float v) {
  if (F.clip_qkv <= 0.f) return v;
  return v < -F.clip_qkv ? -F.clip_qkv : v > F.clip_qkv ? F.clip_qkv : v;
}

// Rotate the pairs of a head's first F.rotary_dims values by the position's angles (`sin` signed per half, as the
// rotary tables hold them): pair i is (x[i], x[i + half]), or (x[2i], x[2i + 1]) where the family interleaves them,
// turned by angle i either way.
void rope(float* x, const Family& F, const float* cos, const float* sin) {
  const int64_t half = F.rotary_dims / 2, stride = F.interleaved ? 2 : 1, partner = F.interleaved ? 1 : half;
  for (int64_t i = 0; i < half; ++i) {
    float a = x[i * stride], b = x[i * stride + partner];
    x[i * stride] = a * cos[i] + b * sin[i];
    x[i * stride + partner] = b * cos[i + half] + a * sin[i + half];
  }
}

// The residual stream x plus the normed `out` (Gemma's sandwich norms), in a thread's own copy of x.
inline void add_normed(float* x, const float* out, NormWeights norm, float eps, float* scratch, int64_t n) {
  apply_norm(out, norm, eps, scratch, n);
  for (int64_t i = 0; i < n; ++i) x[i] += scratch[i];
}

// The family's activation of one value (`xielu`: the layer's values, read where the family's is xIELU).
inline float activation(const Family& family, const Xielu& values, float g) {
  switch (family.activation) {
    case Activation::kGeluTanh: return gelu_tanh(g);
    case Activation::kRelu2: return relu2(g);
    case Activation::kXielu: return xielu(g, values);
    case Activation::kGeluErf: return gelu_erf(g);
    case Activation::kRelu: return g < 0.f ? 0.f : g;  // (NaN stays NaN, as torch's relu keeps it)
    default: return silu(g);
  }
}

// act(gate) * up, or gpt-oss's clamped SwiGLU of the pair.
inline float gated(const Family& family, const Xielu& values, float gate, float up) {
  if (family.activation != Activation::kClampedSwiglu) return activation(family, values, gate) * up;
  const float limit = family.swiglu_limit, g = std::min(gate, limit), u = std::max(std::min(up, limit), -limit);
  return (u + 1.f) * g / (1.f + std::exp(-family.swiglu_alpha * g));
}

// out[i] = act(gate[i]) * up[i] (SiLU's or GELU's 16 at a time); out may be gate.
inline void activate_times(const Family& family, const Xielu& values, const float* gate, const float* up, float* out,
                           int64_t n) {
#ifdef __AVX512F__
  if (family.activation == Activation::kGeluTanh)
    return map16_pairs(gate, up, out, n, [](__m512 g, __m512 u) { return _mm512_mul_ps(gelu_tanh16(g), u); });
  if (family.activation == Activation::kSilu)
    return map16_pairs(gate, up, out, n, [](__m512 g, __m512 u) { return _mm512_mul_ps(silu16(g), u); });
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = gated(family, values, gate[i], up[i]);
}

// A mixture's experts' activated rows from their gate and up products: apart (gate, up), or alternating in `gate`
// (Mixture::paired_gate_up: gate, up, gate, up ...), n outputs.
inline void activate_experts(const Family& F, const Mixture& M, const float* gate, const float* up, float* out,
                             int64_t n) {
  if (!M.paired_gate_up) return activate_times(F, Xielu{}, gate, up, out, n);
  for (int64_t i = 0; i < n; ++i) out[i] = gated(F, Xielu{}, gate[2 * i], gate[2 * i + 1]);
}

// out[i] = act(x[i]) alone, an MLP's without a gate (StarCoder2's, GPT-NeoX's, Nemotron's, Arcee's, Apertus's); out
// may be x.
inline void activate(const Family& family, const Xielu& values, const float* x, float* out, int64_t n) {
#ifdef __AVX512F__
  if (family.activation == Activation::kGeluTanh) return map16(x, out, n, gelu_tanh16);
  if (family.activation == Activation::kSilu) return map16(x, out, n, silu16);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = activation(family, values, x[i]);
}

// A head's queries times the family's query_factor and the layer's attention_scale (1 and 1: left as they are).
inline void scale_query(const Family& family, const Layer& L, float* q, int64_t head_dim) {
  const float factor = family.query_factor * L.attention_scale;
  if (factor != 1.f)
    for (int64_t i = 0; i < head_dim; ++i) q[i] *= factor;
}

// A head's `head_dim` queries or keys normed in place where the layer norms them (Qwen3), before their rotation.
inline void norm_head(float* head, NormWeights norm, float eps, int64_t head_dim) {
  if (norm.data) apply_norm(head, norm, eps, head, head_dim);
}

// Head h's row of a layer's q or k norm where each head has its own (Layer::qk_norms_per_head), else the norm itself.
inline NormWeights norm_of_head(const Layer& L, NormWeights norm, int64_t h, int64_t head_dim) {
  if (!L.qk_norms_per_head || !norm.data) return norm;
  const int64_t offset = h * head_dim * (norm.bf16 ? 2 : 4);
  norm.data = static_cast<const char*>(norm.data) + offset;
  if (norm.bias) norm.bias = static_cast<const char*>(norm.bias) + offset;
  return norm;
}

// Head h's queries or keys at their position: normed by `norm` (the layer's q_norm or k_norm, head h's row of it
// where each head has its own; a layer that norms them all at once, Layer::whole_qk_norms, has applied it already) and
// rotated where the layer rotates, in the family's order (Qwen3's norm before the rotation, Hunyuan's after it) and
// pairing (Family::interleaved).
inline void place_head(const Layer& L, const Family& F, float* head, NormWeights norm, float eps, int64_t head_dim,
                       const float* cos, const float* sin, int64_t h) {
  norm = norm_of_head(L, norm, h, head_dim);
  if (L.whole_qk_norms) norm.data = nullptr;
  if (!F.norms_after_rotation) norm_head(head, norm, eps, head_dim);
  if (F.clip_qkv > 0.f)
    for (int64_t i = 0; i < head_dim; ++i) head[i] = clipped(F, head[i]);
  if (L.rotates) rope(head, F, cos, sin);
  if (F.norms_after_rotation) norm_head(head, norm, eps, head_dim);
}

// At most the claimed loops of layer_step: q, k and v, the heads, o, then gate and up, and down, or a mixture's
// router, gate, up, down and sum (and its shared expert's gate and up, and down); and OLMo 2's whole q/k norms.
constexpr int64_t kLoopsPerLayer = 11;
constexpr int64_t kCachePrefetch = 32768;

// The router's picks for one token, as mixtral.py's `route` and SparseMoeBlock make them: the softmax of its
// scores in float32, the `top_k` largest (the best first; the lower index among equals; NaN above every number, as
// torch.topk orders it), their weights renormalized to sum to 1 where the family does, then rounded to bfloat16
// where it does.
void route(const float* scores, const Mixture& M, int64_t* chosen, float* weights) {
  auto before = [](float a, float b) { return a != a ? b == b : a > b; };  // a ranks above b
  if (M.sparsemixer) {  // PhiMoE's: (best - s) / max(|s|, best) > 2 eps leaves s out of a pick's softmax
    std::vector<bool> picked(M.experts);
    for (int64_t j = 0; j < M.top_k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < M.experts; ++e)
        if (!picked[e] && (best < 0 || before(scores[e], scores[best]))) best = e;
      const float b = scores[best];
      float total = 0.f;
      for (int64_t e = 0; e < M.experts; ++e)
        if (!picked[e] && !((b - scores[e]) / std::max(std::abs(scores[e]), b) > 2.f * M.sparsemixer_eps))
          total += std::exp(scores[e] - b);
      picked[best] = true;
      chosen[j] = best;
      weights[j] = 1.f / total;
      if (M.round_weights) weights[j] = static_cast<float>(c10::BFloat16(weights[j]));
    }
    return;
  }
  float top = -std::numeric_limits<float>::infinity(), sum = 0.f;
  std::vector<float> probabilities(M.experts);
  if (M.sigmoid) {
    for (int64_t e = 0; e < M.experts; ++e) probabilities[e] = 1.f / (1.f + std::exp(-scores[e]));
  } else {
    for (int64_t e = 0; e < M.experts; ++e) top = std::max(top, scores[e]);
    for (int64_t e = 0; e < M.experts; ++e) sum += probabilities[e] = std::exp(scores[e] - top);
    for (int64_t e = 0; e < M.experts; ++e) probabilities[e] /= sum;
  }
  std::vector<bool> taken(M.experts);
  // What the experts are ranked by: their probabilities, or those plus the correction (ERNIE 4.5 MoE, DeepSeek-V3).
  std::vector<float> ranked;
  if (M.correction)
    for (int64_t e = 0; e < M.experts; ++e) ranked.push_back(probabilities[e] + M.correction[e]);
  const float* rank = ranked.empty() ? probabilities.data() : ranked.data();
  if (M.groups > 1) {  // the experts outside the best groups taken already (set_expert_groups made sure enough remain)
    const int64_t size = M.experts / M.groups;
    std::vector<float> group_scores(M.groups), members(size);
    for (int64_t g = 0; g < M.groups; ++g) {
      members.assign(rank + g * size, rank + (g + 1) * size);
      std::partial_sort(members.begin(), members.begin() + M.group_best, members.end(), before);
      float score = 0.f;
      for (int64_t i = 0; i < M.group_best; ++i) score += members[i];
      group_scores[g] = score;
    }
    std::vector<bool> kept(M.groups);
    for (int64_t j = 0; j < M.chosen_groups; ++j) {
      int64_t best = -1;
      for (int64_t g = 0; g < M.groups; ++g)
        if (!kept[g] && (best < 0 || before(group_scores[g], group_scores[best]))) best = g;
      kept[best] = true;
    }
    for (int64_t e = 0; e < M.experts; ++e) taken[e] = !kept[e / size];
  }
  float chosen_sum = 0.f;
  for (int64_t j = 0; j < M.top_k; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < M.experts; ++e)
      if (!taken[e] && (best < 0 || before(rank[e], rank[best]))) best = e;
    taken[best] = true;
    chosen[j] = best;
    chosen_sum += weights[j] = probabilities[best];
  }
  if (M.norm_min > 0.f) chosen_sum = std::max(chosen_sum, M.norm_min);
  for (int64_t j = 0; j < M.top_k; ++j) {
    if (M.normalize) weights[j] /= chosen_sum;
    weights[j] *= M.scale;
    if (M.round_weights) weights[j] = static_cast<float>(c10::BFloat16(weights[j]));
  }
}

// Whether a weight tensor is in the step's layout W (int8 among int4: a GGUF file's wider matrices, see step_layout).
template <typename W>
bool in_layout(at::ScalarType type) {
  if constexpr (std::is_same_v<W, float>) return type == at::kFloat;
  else if constexpr (std::is_same_v<W, c10::BFloat16>) return type == at::kBFloat16;
  else if constexpr (std::is_same_v<W, int8_t>) return type == at::kChar;
  else return type == at::kByte || type == at::kChar;
}

// Rows [begin, end) of a mixture's scored rows (scored_rows) times one input (float32): the router's into `scores`,
// and the one past them, the shared expert's gate, as the sigmoid of its product into `*shared_factor`; a bfloat16
// router's and gate's rounded to bfloat16, as their outputs are in the reference.
void router_scores(const Mixture& M, int64_t begin, int64_t end, const float* input, float* scores,
                   float* shared_factor) {
  auto product = [&](const Matrix& m, int64_t from, int64_t to, float* out) {
    if (!M.router_bf16) return rows<float>(m, from, to, input, out);
    rows<c10::BFloat16>(m, from, to, input, out);
    for (int64_t e = from; e < to; ++e) out[e] = static_cast<float>(c10::BFloat16(out[e]));
  };
  product(M.router, begin, std::min(end, M.experts), scores);
  if (end <= M.experts) return;
  product(M.shared_gate, 0, 1, shared_factor);
  *shared_factor = 1.f / (1.f + std::exp(-*shared_factor));
  if (M.router_bf16) *shared_factor = static_cast<float>(c10::BFloat16(*shared_factor));
}

// The rows that router_scores makes: the router's, and the shared expert's gate where the layer has one.
inline int64_t scored_rows(const Mixture& M) { return M.experts + (M.shared_gate.data ? 1 : 0); }

// An expert's gate, up and down as matrices, or false where its weights are not matrices of the step's layout W and
// the layer's shape (see mixture_step). Paired (Mixture::paired_gate_up), its gate is gate and up alternating, 2 *
// width rows, and up is left empty; stored in-major (float weights), each matrix is read as (out, in) all the same.
template <typename W>
bool expert_matrices(const Mixture& M, int64_t expert, int64_t hidden, Matrix& gate, Matrix& up, Matrix& down) {
  Matrix* made[3] = {&gate, &up, &down};
  for (int64_t part = 0; part < 3; ++part) {
    int64_t i = 3 * expert + part, rows = part < 2 ? M.width : hidden, cols = part < 2 ? hidden : M.width;
    if (M.paired_gate_up && part == 1) {
      up = Matrix{};
      continue;
    }
    if (M.paired_gate_up && part == 0) rows *= 2;
    const at::Tensor& weight = M.weights[i];
    const at::Tensor* scale = M.scales ? &M.scales[i] : nullptr;
    const at::Tensor* bias = M.biases ? &M.biases[2 * expert + part / 2] : nullptr;
    const float* bias_data = bias && bias->numel() > 0 ? bias->data_ptr<float>() : nullptr;
    if (!in_layout<W>(weight.scalar_type()) || try_matrix(weight, scale, bias_data, *made[part]) ||
        (bias_data && bias->numel() != rows))
      return false;
    if (M.in_major) {
      if (kInteger<W>) return false;
      std::swap(made[part]->rows, made[part]->cols);
      made[part]->in_major = true;
    }
    if (made[part]->rows != rows || made[part]->cols != cols) return false;
  }
  return true;
}

// Rows [begin, end) of a matrix stored (in, out) (Matrix::in_major) times x: each input's row of weights times the
// input, added up into the outputs, an input at a time.
template <typename W>
void in_major_rows(const Matrix& m, int64_t begin, int64_t end, const float* x, float* out) {
  const W* w = static_cast<const W*>(m.data);
  std::fill(out + begin, out + end, 0.f);
  const int64_t segment_bytes = (end - begin) * static_cast<int64_t>(sizeof(W));
  for (int64_t c = 0; c < m.cols; ++c) {
    const W* row = w + c * m.rows;
    const float xc = x[c];
    if (c + 8 < m.cols) {  // the whole segment of an input 8 ahead: strided segments defeat the hardware's prefetch
      const char* ahead = reinterpret_cast<const char*>(row + 8 * m.rows + begin);
      for (int64_t b = 0; b < segment_bytes; b += 64) prefetch_to_l2(ahead + b);
    }
#pragma omp simd
    for (int64_t r = begin; r < end; ++r) out[r] += xc * as_float(row[r]);
  }
  if (m.bias)
    for (int64_t r = begin; r < end; ++r) out[r] += m.bias[r];
}

// An expert's rows: product_rows, or in_major_rows for float weights stored in-major.
template <typename W>
void expert_rows(const Matrix& m, int64_t begin, int64_t end, const Rounded& in, float* out) {
  if constexpr (!kInteger<W>) {
    if (m.in_major) return in_major_rows<W>(m, begin, end, in.x, out);
  }
  product_rows<W>(m, begin, end, in, out);
}

// A sparse layer's feed-forward part for one token, `in` holding its normed input (rounded for W) and `input` the
// same in float32: the router's scores (rows claimed as a product's), then in every thread the same picks
// (route), the chosen experts' gate and up rows claimed as one product of top_k * width rows and their down rows as
// one of top_k * hidden, and the weighted sum of the experts' outputs added to x. The experts nobody picked are
// never read. Their matrices are made here, in the team, which cannot throw: an expert whose weights are not a
// matrix of the step's layout and the layer's shape sets `unusable` (its products skipped), which decode_step
// reports once the team is done.
template <typename W>
void mixture_step(Team& team, float* x, const Mixture& M, int64_t hidden, const float* input, const Family& F,
                  Shared& S, const Rounded& in, std::vector<float>& activated, std::vector<Rounded>& expert_inputs,
                  std::atomic<bool>& unusable) {
  team.claim(scored_rows(M), kChunk, 4, [&](int64_t begin, int64_t end) {
    router_scores(M, begin, end, input, S.router.data(), S.shared_factors.data());
  });
  team.wait();
  const int64_t k = M.top_k, width = M.width;
  int64_t chosen[kMostChosenExperts];
  float weights[kMostChosenExperts];
  route(S.router.data(), M, chosen, weights);
  Matrix gate[kMostChosenExperts], up[kMostChosenExperts], down[kMostChosenExperts];
  bool usable = true;
  for (int64_t j = 0; j < k && usable; ++j) usable = expert_matrices<W>(M, chosen[j], hidden, gate[j], up[j], down[j]);
  if (!usable) unusable.store(true, std::memory_order_relaxed);
  // Rows [begin, end) of the chosen experts' products stacked (each `count` rows), into out's rows alike.
  // An in-major expert's claim reads a segment of every input's row: long segments keep the reads streaming.
  const int64_t chunk = M.in_major ? kInMajorChunk : kChunk;
  auto stacked = [&](const Matrix* matrices, int64_t count, auto input_of, float* out) {
    team.claim(k * count, chunk, 4, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin / count; usable && begin < end; j = begin / count) {
        int64_t stop = std::min(end, (j + 1) * count);
        expert_rows<W>(matrices[j], begin - j * count, stop - j * count, input_of(j), out + j * count);
        begin = stop;
      }
    });
  };
  auto same_input = [&](int64_t) -> const Rounded& { return in; };
  stacked(gate, M.paired_gate_up ? 2 * width : width, same_input, S.gate.data());
  if (!M.paired_gate_up) stacked(up, width, same_input, S.up.data());
  team.wait();
  activate_experts(F, M, S.gate.data(), S.up.data(), activated.data(), k * width);
  for (int64_t j = 0; j < k; ++j) expert_inputs[j].set<W>(activated.data() + j * width, width);
  stacked(down, hidden, [&](int64_t j) -> const Rounded& { return expert_inputs[j]; }, S.mixed.data());
  team.wait();
  // Each expert's output times its weight, summed over the chosen ones in their order, in float32 (as the
  // reference sums them), then added to the residual stream.
  team.claim(hidden, kChunk, 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float sum = 0.f;
      for (int64_t j = 0; j < k; ++j) sum += weights[j] * S.mixed[j * hidden + i];
      x[i] += sum * F.residual_factor;
    }
  });
}

// `normed` and `activated`: buffers of the calling thread's, the inputs of the products that it makes itself. With
// sandwich norms (Gemma) x is the calling thread's own copy of the residual stream, which every thread updates
// alike: the MLP's output is left in S.out, for the caller to add normed after the barrier that ends the layer.
template <typename W, typename C>
void layer_step(Team& team, float* x, const Layer& L, const Family& F, Shared& S, float eps, int64_t pos,
                const float* cos, const float* sin, std::vector<float>& normed, std::vector<float>& activated,
                Rounded& in, std::vector<float>& scores, std::vector<Rounded>& expert_inputs,
                std::atomic<bool>& unusable) {
  const bool sandwich = L.attn_out_norm.data != nullptr;
  int64_t hidden = L.o.rows, n_kv = L.keys.size(1), head_dim = L.keys.size(3), n_head = L.q.rows / head_dim;
  int64_t head_stride = L.keys.stride(1), pos_stride = L.keys.stride(2);
  C* keys = L.keys.data_ptr<C>();
  C* values = L.values.data_ptr<C>();

  // Each thread norms and rounds the whole input itself, into buffers of its own: a few hundred nanoseconds, where
  // splitting it would cost a barrier. (OLMo 2 norms no layer input.)
  if (L.attn_norm.data) apply_norm(x, L.attn_norm, eps, normed.data(), hidden);
  in.set<W>(L.attn_norm.data ? normed.data() : x, hidden);
  // This position's keys and values go into the cache from the chunks that make them, a key head from the chunk
  // that completes it (rotated pairs span the head), so no barrier and no phase of its own stand between the
  // products and the attention: one meeting of the team less per layer. Keys normed over all heads at once wait
  // for all of them.
  auto cache_key = [&](int64_t h) {  // head h's key normed and rotated, into the cache
    place_head(L, F, S.k.data() + h * head_dim, L.k_norm, eps, head_dim, cos, sin, h);
    for (int64_t i = 0; i < head_dim; ++i)
      keys[h * head_stride + pos * pos_stride + i] = static_cast<C>(S.k[h * head_dim + i]);
  };
  // The last of a head's rows to be made (acq_rel: the other threads' rows of it are seen) finishes the head and
  // sets its count back for the next layer, which a barrier keeps apart.
  auto key_rows_made = [&](int64_t begin, int64_t end) {
    for (int64_t h = begin / head_dim; h * head_dim < end; ++h) {
      int64_t rows = std::min(end, (h + 1) * head_dim) - std::max(begin, h * head_dim);
      if (S.key_rows_made[h].fetch_add(rows, std::memory_order_acq_rel) + rows < head_dim) continue;
      S.key_rows_made[h].store(0, std::memory_order_relaxed);
      cache_key(h);
    }
  };
  // q, k and v as one loop (Stacked): SmolLM2 at two threads, benchmarks/turns.py against claims of each apart
  // (with gate and up below): bfloat16 1.029-1.063x with the vCPUs far apart (0.73 -> 0.76-0.77 of the probe),
  // 1.034x close; float32 1.054x far (0.81 -> 0.86), 1.003x close. A thread's share of k or v alone had read at
  // 0.55-0.75 of the probe, its short streams taken up late by the hardware's prefetchers.
  const Stacked qkv{&L.q, &L.k, &L.v};
  if (L.qkv_per_head) {  // heads taken apart (and their keys and values cached) where the queries are placed
    team.claim_rows(L.qkv, [&](int64_t begin, int64_t end) { product_rows<W>(L.qkv, begin, end, in, S.qkv.data()); });
  } else team.claim_rows(qkv, [&](int64_t part, int64_t begin, int64_t end) {
    if (qkv.parts[part] == &L.q) {
      product_rows<W>(L.q, begin, end, in, S.q.data());
    } else if (qkv.parts[part] == &L.k) {
      product_rows<W>(L.k, begin, end, in, S.k.data());
      if (!L.whole_qk_norms) key_rows_made(begin, end);
    } else {
      product_rows<W>(L.v, begin, end, in, S.v.data());
      for (int64_t r = begin; r < end; ++r)
        values[r / head_dim * head_stride + pos * pos_stride + r % head_dim] = static_cast<C>(clipped(F, S.v[r]));
    }
  });
  int64_t first = L.window > 0 ? std::max(pos - L.window + 1, int64_t(0)) : 0, group = n_head / n_kv;
  // The cached keys and values that this thread's share of the heads will attend to (without this position's,
  // just written) are on their way during the wait, instead of each being read from memory as the attention
  // reaches it: SmolLM2 bfloat16 at ~100 positions, two threads, the attention of 30 layers in 0.13 ms a token
  // against 0.15-0.16. Up to kCachePrefetch bytes of each: past that, the hardware's prefetchers follow the reads.
  auto [head_begin, head_end] = team.share(n_head, 1);
  for (int64_t kv = head_begin / group; head_end > head_begin && kv <= (head_end - 1) / group; ++kv) {
    int64_t bytes = std::min((pos - first) * pos_stride * int64_t(sizeof(C)), kCachePrefetch);
    for (const C* cached : {keys + kv * head_stride + first * pos_stride, values + kv * head_stride + first * pos_stride})
      for (int64_t b = 0; b < bytes; b += 64) prefetch_to_l2(reinterpret_cast<const char*>(cached) + b);
  }
  team.prefetch_share(L.o);
  team.wait();
  // Parallel branches: the MLP's input normed now, from the layer's input (the attention's inputs were rounded into
  // `in` or read, and no thread adds to x before the barriers below); where the two norms are one tensor, `normed`
  // holds it already.
  if (F.parallel && L.mlp_norm.data != L.attn_norm.data) apply_norm(x, L.mlp_norm, eps, normed.data(), hidden);
  if (L.whole_qk_norms) {  // one thread norms all the keys (and rotates and caches them), another all the queries
    team.claim(2, 1, 1, [&](int64_t begin, int64_t end) {
      for (int64_t part = begin; part < end; ++part) {
        if (part == 0) {
          apply_norm(S.k.data(), L.k_norm, eps, S.k.data(), L.k.rows);
          for (int64_t h = 0; h < n_kv; ++h) cache_key(h);
        } else {
          apply_norm(S.q.data(), L.q_norm, eps, S.q.data(), L.q.rows);
        }
      }
    });
    team.wait();
  }
  // A fused q/k/v read in place is claimed a key/value head at a time (with its qkv_group query heads): its key and
  // value are cached before any of them attends.
  const int64_t per_claim = L.qkv_per_head ? L.qkv_group : 1;
  team.claim(n_head / per_claim, 1, 1, [&](int64_t begin, int64_t end) {
    for (int64_t h = begin * per_claim; h < end * per_claim; ++h) {
      float* q = S.q.data() + h * head_dim;
      if (L.qkv_per_head) {  // its query; with its group's first, the group's key and value, cached
        const float* made_q = qkv_part(L, S.qkv.data(), h, 0, head_dim);
        std::copy(made_q, made_q + head_dim, q);
        if (const int64_t g = h / L.qkv_group; h % L.qkv_group == 0) {
          const float *made_k = qkv_part(L, S.qkv.data(), g, 1, head_dim),
                      *made_v = qkv_part(L, S.qkv.data(), g, 2, head_dim);
          std::copy(made_k, made_k + head_dim, S.k.data() + g * head_dim);
          cache_key(g);
          for (int64_t i = 0; i < head_dim; ++i)
            values[g * head_stride + pos * pos_stride + i] = static_cast<C>(clipped(F, made_v[i]));
        }
      }
      place_head(L, F, q, L.q_norm, eps, head_dim, cos, sin, h);
      scale_query(F, L, q, head_dim);
      int64_t kv = (h / group) * head_stride;
      attend_group<C>(q, 1, keys + kv, values + kv, pos_stride, head_dim, first, pos, scores, S.attended.data() + h * head_dim,
                      nullptr, F.attention_cap, &F.alibi, h, L.sinks ? L.sinks + h : nullptr);
    }
  });
  team.wait();
  // The products' rows that need nothing else are finished in the chunk that makes them: the residual sums, and
  // SiLU(gate) * up with gate and up claimed together.
  in.set<W>(S.attended.data(), L.o.cols);
  team.claim_rows(L.o, [&](int64_t begin, int64_t end) {
    product_rows<W>(L.o, begin, end, in, S.out.data());
    if (!sandwich)
      for (int64_t i = begin; i < end; ++i) x[i] += S.out[i] * F.residual_factor;
  });
  team.prefetch_share(Stacked{&L.gate, &L.up});
  team.wait();
  if (sandwich) add_normed(x, S.out.data(), L.attn_out_norm, eps, normed.data(), hidden);

  // Gate and up are one loop of their rows stacked (Stacked, as q, k and v), so that each thread's share is one
  // stream front to back: two threads read one matrix each. Chunks that each took rows of both switched between
  // the two matrices' streams, which the hardware prefetchers then took up again: SmolLM2 bfloat16 on one thread,
  // the two products of 30 layers in 3.9-4.4 ms a token against 3.4-3.6 apart. Every thread then makes SiLU(gate)
  // * up whole for itself, as it norms the input of a layer (1-2 us for SmolLM2's 1536 values).
  if (L.mlp_norm.data && !F.parallel) apply_norm(x, L.mlp_norm, eps, normed.data(), hidden);
  in.set<W>(L.mlp_norm.data ? normed.data() : x, hidden);
  float out_factor = F.residual_factor;
  if (L.mixture.experts) {
    mixture_step<W>(team, x, L.mixture, hidden, L.mlp_norm.data ? normed.data() : x, F, S, in, activated,
                    expert_inputs, unusable);
    if (!L.up.data) return;
    // The shared expert, on `in` still: the experts' last barrier freed S.gate and S.up, and the one below keeps
    // their sum's and down's additions to x apart. Gated (Qwen2-MoE) or not.
    if (L.mixture.shared_gate.data) out_factor = S.shared_factors[0] * F.residual_factor;
  }
  const Stacked gate_up{&L.gate, &L.up};
  team.claim_rows(gate_up, [&](int64_t part, int64_t begin, int64_t end) {
    const bool up = gate_up.parts[part] == &L.up;
    product_rows<W>(*gate_up.parts[part], begin, end, in, up ? S.up.data() : S.gate.data());
  });
  team.prefetch_share(L.down);
  team.wait();
  if (L.gate.data) activate_times(F, L.xielu, S.gate.data(), S.up.data(), activated.data(), L.down.cols);
  else activate(F, L.xielu, S.up.data(), activated.data(), L.down.cols);
  in.set<W>(activated.data(), L.down.cols);
  team.claim_rows(L.down, [&](int64_t begin, int64_t end) {
    product_rows<W>(L.down, begin, end, in, S.out.data());
    if (!sandwich)
      for (int64_t i = begin; i < end; ++i) x[i] += S.out[i] * out_factor;
  });
}

// The layout that a stack's products take (with_layout): its weights' one dtype, or int4 where int4 and int8
// matrices mix (quantization="int4" keeps a GGUF file's 5-8-bit matrices at int8, kernels/linear.py), whose
// inputs are rounded for int4 and which read the int8 ones with the int8 products (product_rows).
// A mixture's experts count with the dtype they had when set (StepWeights::experts_layout): a step reads only those
// the router picks, and checks each of them then (in_layout).
at::ScalarType step_layout(const char* op, const std::vector<at::Tensor>& weights,
                           c10::optional<at::ScalarType> experts_layout = c10::nullopt) {
  auto integer = [](at::ScalarType type) { return type == at::kChar || type == at::kByte; };
  at::ScalarType layout = weights[0].scalar_type();
  auto take = [&](at::ScalarType type) {
    TORCH_CHECK(type == layout || (integer(type) && integer(layout)), op,
                ": all weights must share one dtype (int8 and int4 may mix), got ", layout, " and ", type);
    if (type == at::kByte) layout = type;
  };
  for (const at::Tensor& weight : weights)
    if (weight.numel() > 0) take(weight.scalar_type());  // (a sparse layer's gate, up and down are empty)
  if (experts_layout) take(*experts_layout);
  return layout;
}

inline bool is_int8(const at::Tensor& weight) { return weight.scalar_type() == at::kChar; }

// After a step's team: the flag mixture_step and batch_mixture_step set where a picked expert was not the step's.
void check_experts_usable(const char* op, const std::atomic<bool>& unusable, at::ScalarType layout) {
  TORCH_CHECK(!unusable.load(), op, ": an expert the router picked has weights that are not a (width, hidden) or ",
              "(hidden, width) matrix of the layers' layout (", layout, ") with its scales");
}

// The tensors of a decoder stack's layers that decode_step and decode_batch read: per layer two norm weights (four
// with Qwen3's q and k norms), seven weights (q, k, v, o, gate, up, down), their seven scales when quantized and
// three biases for q, k, v (Qwen2), else empty lists. A DecodeStep hands them over once, when it gathers the
// model's tensors (kernels/llama.py):
// passing the ~300 tensors with every step cost ~0.1 ms of argument conversion a token (~0.3 us a tensor), more
// than a SmolLM2 step's attention. The steps still read each tensor's data, shape and dtype when they run, so a
// weight changed in place, or given new data (`.data =`), is read as it is then.
//
// A family other than Llama's says what it computes differently with set_family: `sandwich`, norms of the attention's
// and the MLP's outputs (the layer's norms then are its input's, the attention output's, the MLP input's and the MLP
// output's, then q's and k's where it has them); `gelu`, the MLP's activation; `norm_offset`, added to every norm
// weight (Gemma's 1 + w); `query_factor`, the queries' scale times sqrt(head_dim); `embedding_scale`, what the
// embedding multiplies its rows by (Gemma's sqrt(hidden_size): decode_step's embedded_row); `sliding`, one flag
// per layer, set where the layer attends within the step's window and rotates by its local tables (Gemma's
// layer_types). Without flags every layer takes the window and the tables. `attention_cap`, Gemma 2's soft-cap on the
// attention scores (0: none). With sandwich norms, an empty tensor for the input's or the MLP input's norm says the
// layer has none (OLMo 2); q and k norms as large as all the queries and all the keys norm them whole (OLMo 2's,
// Layer::whole_qk_norms), not a head at a time. set_fused: see `fused_qkv`. set_interleaved: the rotation's pairs
// (Family::interleaved).
struct StepWeights : torch::CustomClassHolder {
  std::vector<at::Tensor> norms, weights, scales, biases;
  // Fused (set_fused): a layer's q/k/v are one weight stacked by rows, as Phi-3 stores them, and its gate/up one
  // (Phi-3's, GLM's), so that a layer's weights are q/k/v or q, k, v, then o, then gate/up or gate, up, then down:
  // 4 to 7 a layer (matrices_per_layer), as many scales or none, and biases as biases_per_layer says.
  bool fused_qkv = false, fused_gate_up = false;
  bool sandwich = false, gelu = false, interleaved = false;
  double norm_offset = 0., query_factor = 1., embedding_scale = 1., attention_cap = 0., residual_scale = 1.;
  std::vector<int64_t> sliding;
  std::vector<int64_t> unrotated;  // per layer, 1 where its queries and keys are not rotated (set_unrotated)
  StepWeights(std::vector<at::Tensor> norms, std::vector<at::Tensor> weights, std::vector<at::Tensor> scales,
              std::vector<at::Tensor> biases)
      : norms(std::move(norms)), weights(std::move(weights)), scales(std::move(scales)), biases(std::move(biases)) {}

  void set_family(bool sandwich_norms, bool gelu_mlp, double offset, double factor, double embedding_factor,
                  std::vector<int64_t> sliding_layers, double attention_soft_cap) {
    TORCH_CHECK(sliding_layers.empty() || sliding_layers.size() * matrices_per_layer() == weights.size(),
                "StepWeights.set_family: one sliding flag per layer (", weights.size() / matrices_per_layer(),
                "), got ", sliding_layers.size());
    sandwich = sandwich_norms, gelu = gelu_mlp, norm_offset = offset, query_factor = factor;
    embedding_scale = embedding_factor;
    sliding = std::move(sliding_layers);
    attention_cap = attention_soft_cap;
  }

  void set_fused(bool qkv, bool gate_up) { fused_qkv = qkv, fused_gate_up = gate_up; }

  // ERNIE 4.5, GLM and Helium: the rotation turns the pairs (2i, 2i + 1) (Family::interleaved).
  void set_interleaved(bool interleaved_pairs) { interleaved = interleaved_pairs; }

  // Granite: what each branch's output is multiplied by before it joins the residual stream.
  void set_residual_scale(double scale) { residual_scale = scale; }

  // GPT-NeoX: a layer's q/k/v one weight, each head's query, key and value rows in turn (Layer::qkv_per_head); with
  // fewer key heads than query heads, each key head's query heads, then its key and its value (Falcon's new decoder
  // architecture: Layer::qkv_group).
  bool qkv_per_head = false;
  void set_qkv_per_head(bool per_head) { qkv_per_head = per_head, fused_qkv = fused_qkv || per_head; }
  // CodeGen: the fused q/k/v (set_qkv_per_head) in blocks of `block_heads` heads (Layer::qkv_block_heads).
  int64_t qkv_block_heads = 1;
  bool qkv_values_first = false;
  void set_qkv_blocks(int64_t block_heads, bool values_first) {
    TORCH_CHECK(block_heads >= 1, "StepWeights.set_qkv_blocks: a block holds at least one head, got ", block_heads);
    qkv_block_heads = block_heads, qkv_values_first = values_first;
  }

  // Parallel branches (Family::parallel); GELU's exact form (Activation::kGeluErf, where set_activation sets none).
  bool parallel = false, exact_gelu = false;
  void set_parallel(bool parallel_branches) { parallel = parallel_branches; }
  void set_exact_gelu(bool exact) { exact_gelu = exact; }
  // OPT: ReLU for the MLP without a gate (Activation::kRelu, where set_activation sets none).
  bool relu = false;
  void set_relu(bool relu_mlp) { relu = relu_mlp; }

  // GPT-2's learned absolute positions (GPT-BigCode's, OPT's past its offset, GPT-Neo's): a (positions, hidden) table
  // of the embedding's dtype whose row at a token's position the step adds to the token's embedded row, where it
  // embeds the token itself (decode_step and decode_tokens with an embedding; add_position_row); undefined for none.
  at::Tensor positions;
  void set_positions(at::Tensor table) {
    auto type = table.scalar_type();
    TORCH_CHECK(table.dim() == 2 && table.is_contiguous() && (type == at::kFloat || type == at::kBFloat16),
                "StepWeights.set_positions: the positions' table must be a contiguous 2-D float32 or bfloat16 one, "
                "got ", type, " ", table.sizes());
    positions = std::move(table);
  }

  // Hunyuan: each head's q/k norms after the rotation (Family::norms_after_rotation).
  bool norms_after_rotation = false;
  void set_norms_after_rotation(bool after) { norms_after_rotation = after; }

  // The MLP's activation by kind (Activation: 0 SiLU, 1 GELU's tanh form, 2 relu2, 3 xIELU), over set_family's gelu;
  // for xIELU, per layer its module's alpha_p, alpha_n, beta and eps (one-value tensors), read at each step as the
  // weights are (Layer::xielu).
  int64_t activation = -1;  // -1: set_family's gelu says
  std::vector<at::Tensor> xielu_values;
  void set_activation(int64_t kind, std::vector<at::Tensor> per_layer_values) {
    TORCH_CHECK(0 <= kind && kind <= static_cast<int64_t>(Activation::kRelu),
                "StepWeights.set_activation: kind 0 (SiLU), 1 (GELU tanh), 2 (relu2), 3 (xIELU), 4 (GELU erf) or 5 "
                "(ReLU), got ", kind);
    const bool xielu = kind == static_cast<int64_t>(Activation::kXielu);
    TORCH_CHECK(per_layer_values.size() == (xielu ? 4 * (weights.size() / matrices_per_layer()) : 0),
                "StepWeights.set_activation: xIELU takes alpha_p, alpha_n, beta and eps of each layer (",
                weights.size() / matrices_per_layer(), "), the others none; got ", per_layer_values.size());
    for (const at::Tensor& value : per_layer_values)
      TORCH_CHECK(value.numel() == 1, "StepWeights.set_activation: xIELU's values are one number each, got ",
                  value.sizes());
    activation = kind, xielu_values = std::move(per_layer_values);
  }

  // OLMo and OLMoE: queries, keys and values clamped to +-clip after their projections (Family::clip_qkv; 0: none).
  double clip_qkv = 0.;
  void set_clip_qkv(double clip) { clip_qkv = clip; }

  // SmolLM3: a flag per layer, 1 where the layer attends without rotary positions.
  void set_unrotated(std::vector<int64_t> unrotated_layers) {
    TORCH_CHECK(unrotated_layers.size() * matrices_per_layer() == weights.size(),
                "StepWeights.set_unrotated: one flag per layer (", weights.size() / matrices_per_layer(), "), got ",
                unrotated_layers.size());
    unrotated = std::move(unrotated_layers);
  }

  // A factor per layer on its attention scores over the family's scale (Layer::attention_scale; GPT-2's
  // scale_attn_by_inverse_layer_idx, 1 / (layer + 1)); empty: 1 on every layer.
  std::vector<double> attention_scales;
  void set_layer_attention_scales(std::vector<double> scales) {
    TORCH_CHECK(scales.size() * matrices_per_layer() == weights.size(),
                "StepWeights.set_layer_attention_scales: one scale per layer (", weights.size() / matrices_per_layer(),
                "), got ", scales.size());
    attention_scales = std::move(scales);
  }

  // Mixtures of experts (set_experts): per layer its router, float32 or bfloat16, or an empty tensor for a dense
  // layer; the experts' weights of the sparse layers in order, gate, up and down of each expert (a sparse layer's
  // own gate, up and down, and their scales, are empty tensors), with as many scales or none.
  std::vector<at::Tensor> routers, expert_weights, expert_scales;
  std::vector<int64_t> expert_counts;  // per layer, as its router's rows were when set (0: dense)
  c10::optional<at::ScalarType> experts_layout;  // the experts' dtype when set (uint8 where int4 and int8 mix)
  bool int8_experts = false;                     // whether some of them were int8 then
  int64_t top_k = 0;
  bool normalize_experts = false, round_expert_weights = false;

  void set_experts(std::vector<at::Tensor> layer_routers, std::vector<at::Tensor> weights,
                   std::vector<at::Tensor> scales, int64_t experts_per_token, bool normalize, bool round_weights) {
    int64_t layers = static_cast<int64_t>(this->weights.size() / matrices_per_layer()), needed = 0;
    std::vector<int64_t> counts;
    TORCH_CHECK(!fused_qkv && !sandwich,  // (a fused gate/up: Granite MoE shared's shared MLP)
                "StepWeights.set_experts: mixtures of experts take Llama's layers");
    TORCH_CHECK(static_cast<int64_t>(layer_routers.size()) == layers, "StepWeights.set_experts: one router per layer (",
                layers, "), an empty tensor for a dense one; got ", layer_routers.size());
    for (const at::Tensor& router : layer_routers)
      if (router.numel() > 0) {
        TORCH_CHECK(router.dim() == 2 && experts_per_token <= router.size(0),
                    "StepWeights.set_experts: routers must be (experts, hidden) with at least ", experts_per_token,
                    " experts, got ", router.sizes());
        needed += 3 * router.size(0);
        counts.push_back(router.size(0));
      } else {
        counts.push_back(0);
      }
    TORCH_CHECK(static_cast<int64_t>(weights.size()) == needed && (scales.empty() || scales.size() == weights.size()),
                "StepWeights.set_experts: the routers need ", needed, " expert weights (gate, up and down of each) and "
                "as many scales or none, got ", weights.size(), " and ", scales.size());
    TORCH_CHECK(0 < experts_per_token && experts_per_token <= kMostChosenExperts,
                "StepWeights.set_experts: between 1 and ", kMostChosenExperts, " experts a token, got ",
                experts_per_token);
    if (!weights.empty()) experts_layout = step_layout("StepWeights.set_experts", weights);
    int8_experts = std::any_of(weights.begin(), weights.end(), is_int8);
    routers = std::move(layer_routers), expert_weights = std::move(weights), expert_scales = std::move(scales);
    expert_counts = std::move(counts);
    top_k = experts_per_token, normalize_experts = normalize, round_expert_weights = round_weights;
  }

  // Qwen2-MoE's shared experts (set_shared_experts, after set_experts): per layer the gate of its shared expert, one
  // row of the router's dtype, or an empty tensor for a layer without one (a dense one). A sparse layer with a gate
  // has the shared expert's gate, up and down as its own weights, where a sparse layer's are otherwise empty.
  std::vector<at::Tensor> shared_gates;

  void set_shared_experts(std::vector<at::Tensor> gates) {
    TORCH_CHECK(gates.size() == routers.size(), "StepWeights.set_shared_experts: one gate per layer of set_experts (",
                routers.size(), "), an empty tensor for a layer without a shared expert; got ", gates.size());
    for (size_t l = 0; l < gates.size(); ++l)
      TORCH_CHECK(gates[l].numel() == 0 || routers[l].numel() > 0, "StepWeights.set_shared_experts: layer ", l,
                  " has a shared expert's gate but no router");
    shared_gates = std::move(gates);
  }

  // ERNIE 4.5 MoE's choice of experts (set_expert_choice, after set_experts; Mixture::correction, norm_min): per
  // layer a correction bias added to the probabilities when choosing (one per expert; an empty tensor for a dense
  // layer), and the floor of the chosen probabilities' sum.
  std::vector<at::Tensor> corrections;
  double norm_min = 0.;

  void set_expert_choice(std::vector<at::Tensor> layer_corrections, double min_sum) {
    check_per_expert("StepWeights.set_expert_choice", "correction", layer_corrections);
    corrections = std::move(layer_corrections), norm_min = min_sum;
  }

  // DeepSeek-V3's routing (set_expert_groups, after set_experts; Mixture::sigmoid, groups, chosen_groups, group_best,
  // scale), GLM-4.5's and dots.llm1's: scores by the sigmoid, the choice within the `chosen` best of `groups` groups
  // of each sparse layer's experts (a group ranked by the sum of its `best` best ranked scores), the chosen weights
  // times `scale`.
  bool sigmoid_experts = false;
  int64_t expert_groups = 1, chosen_expert_groups = 1, group_best = 1;
  double routed_scale = 1.;

  void set_expert_groups(bool sigmoid, int64_t groups, int64_t chosen, int64_t best, double scale) {
    TORCH_CHECK(groups >= 1 && 1 <= chosen && chosen <= groups && best >= 1,
                "StepWeights.set_expert_groups: between 1 and ", groups, " chosen of ", groups,
                " groups, each ranked by at least its best score; got ", chosen, " and ", best);
    for (int64_t experts : expert_counts)
      TORCH_CHECK(experts == 0 || (experts % groups == 0 && best <= experts / groups &&
                                   top_k <= chosen * (experts / groups)),
                  "StepWeights.set_expert_groups: ", experts, " experts do not make ", groups, " equal groups of at "
                  "least ", best, " experts whose ", chosen, " best hold ", top_k, " experts a token");
    sigmoid_experts = sigmoid, expert_groups = groups, chosen_expert_groups = chosen, group_best = best;
    routed_scale = scale;
  }

  // That `per_layer` holds one tensor per layer of set_experts (an empty one for a dense layer), or none, each with one
  // value per expert of its layer.
  void check_per_expert(const char* op, const char* what, const std::vector<at::Tensor>& per_layer) const {
    TORCH_CHECK(per_layer.empty() || per_layer.size() == routers.size(), op, ": one ", what,
                " per layer of set_experts (", routers.size(), "), an empty tensor for a dense one, or none; got ",
                per_layer.size());
    for (size_t l = 0; l < per_layer.size(); ++l)
      TORCH_CHECK(per_layer[l].numel() == expert_counts[l], op, ": layer ", l, "'s ", what, " has ",
                  per_layer[l].numel(), " values for ", expert_counts[l], " experts");
  }

  // gpt-oss's experts (set_expert_layout, after set_experts; Mixture::paired_gate_up, in_major, biases): each
  // expert's gate and up one matrix of alternating rows (its up weight an empty tensor), the float experts stored
  // (in, out); per expert of the sparse layers its gate/up's and down's biases (or none), and per layer its router's
  // bias (or none). The biases are held as float32: a float32 model's as they are, a bfloat16 model's converted now.
  bool paired_gate_up = false, experts_in_major = false;
  std::vector<at::Tensor> expert_biases, router_biases;

  void set_expert_layout(bool paired, bool in_major, std::vector<at::Tensor> biases,
                         std::vector<at::Tensor> layer_router_biases) {
    int64_t experts = 0;
    for (int64_t count : expert_counts) experts += count;
    TORCH_CHECK(biases.empty() || static_cast<int64_t>(biases.size()) == 2 * experts,
                "StepWeights.set_expert_layout: two biases per expert (", 2 * experts, ") or none, got ", biases.size());
    check_per_expert("StepWeights.set_expert_layout", "router bias", layer_router_biases);
    auto float32 = [](std::vector<at::Tensor>& tensors) {
      for (at::Tensor& t : tensors) t = t.to(at::kFloat).contiguous();
    };
    float32(biases), float32(layer_router_biases);
    paired_gate_up = paired, experts_in_major = in_major;
    expert_biases = std::move(biases), router_biases = std::move(layer_router_biases);
  }

  // gpt-oss's attention sinks (Layer::sinks): per layer one value per query head, held as float32 as the biases of
  // set_expert_layout are, or an empty tensor for a layer without.
  std::vector<at::Tensor> sinks;
  void set_sinks(std::vector<at::Tensor> layer_sinks) {
    TORCH_CHECK(layer_sinks.size() * matrices_per_layer() == weights.size(), "StepWeights.set_sinks: one tensor per "
                "layer (", weights.size() / matrices_per_layer(), "), got ", layer_sinks.size());
    for (at::Tensor& t : layer_sinks) t = t.to(at::kFloat).contiguous();
    sinks = std::move(layer_sinks);
  }

  // PhiMoE's sparsemixer routing at inference (Mixture::sparsemixer), its router_jitter_noise as `eps`.
  bool sparsemixer = false;
  double sparsemixer_eps = 0.;
  void set_sparsemixer(bool on, double eps) { sparsemixer = on, sparsemixer_eps = eps; }

  // gpt-oss's clamped SwiGLU (Activation::kClampedSwiglu, Family::swiglu_alpha and swiglu_limit).
  double swiglu_alpha = 0., swiglu_limit = 0.;
  void set_clamped_swiglu(double alpha, double limit) {
    activation = static_cast<int64_t>(Activation::kClampedSwiglu), swiglu_alpha = alpha, swiglu_limit = limit;
  }

  // StarCoder2's LayerNorms (set_norm_biases): a bias for every norm of `norms`, in their order, then the final
  // norm's.
  std::vector<at::Tensor> norm_biases;

  void set_norm_biases(std::vector<at::Tensor> biases) {
    TORCH_CHECK(biases.size() == norms.size() + 1, "StepWeights.set_norm_biases: one bias per norm (", norms.size(),
                ") and the final norm's, got ", biases.size());
    norm_biases = std::move(biases);
  }

  // BLOOM's and Falcon-RW's ALiBi (Family::alibi): a slope per query head, whether the slope x position products are
  // rounded to bfloat16, and the factor the biases are multiplied by after.
  Alibi alibi;
  void set_alibi(std::vector<double> slopes, bool bfloat16_products, double factor) {
    alibi.slopes.assign(slopes.begin(), slopes.end());
    alibi.bfloat16 = bfloat16_products, alibi.factor = static_cast<float>(factor);
  }

  // BLOOM's LayerNorm of the embeddings (word_embeddings_layernorm), with its bias and epsilon, applied to a token's
  // row where the step embeds the token itself (decode_step and decode_tokens with an embedding: embed_row's callers
  // apply it, embedding_norm); an undefined weight for none. A bfloat16 model's normed row is rounded to bfloat16, as
  // its layers hand it on.
  at::Tensor embedding_norm_weight, embedding_norm_bias;
  double embedding_norm_eps = 0.;
  void set_embedding_norm(at::Tensor weight, at::Tensor bias, double eps) {
    TORCH_CHECK(weight.dim() == 1 && bias.sizes() == weight.sizes(), "StepWeights.set_embedding_norm: a weight and a "
                "bias of the embedding's width, got ", weight.sizes(), " and ", bias.sizes());
    embedding_norm_weight = std::move(weight), embedding_norm_bias = std::move(bias), embedding_norm_eps = eps;
  }

  // Cohere's LayerNorms without biases: every norm centred before it is scaled, nothing added after.
  bool centred_norms = false;
  void set_centred_norms(bool centred) { centred_norms = centred; }

  // Per-head q/k norms with a row of weights for each head (StableLM 2 12B's, Command R+'s: Layer::qk_norms_per_head),
  // where a q norm as large as the queries would otherwise be OLMo 2's over all heads at once. Of the LayerNorm kind
  // as the family's other norms are: centred, with a bias where set_norm_biases gives them one.
  bool qk_norms_per_head = false;
  void set_qk_norms_per_head(bool per_head) { qk_norms_per_head = per_head; }

  // The language-model head's bias (Phi's, GPT-J's, CodeGen's), added to the logits of a step that runs the head;
  // an empty tensor for none. Held as float32, the products' bias type: a float32 bias itself (read as it is at each
  // step), a bfloat16 model's widened once here rather than at every step.
  at::Tensor head_bias{};
  void set_head_bias(at::Tensor bias) {
    head_bias = bias.scalar_type() == at::kFloat && bias.is_contiguous() ? std::move(bias)
                                                                          : bias.to(at::kFloat).contiguous();
  }

  size_t matrices_per_layer() const { return 7 - (fused_qkv ? 2 : 0) - (fused_gate_up ? 1 : 0); }
  // q, k and v's (Qwen2, GLM; the fused q/k/v's one, Phi-3's), or every projection's (StarCoder2's and ERNIE 4.5's
  // use_bias: an empty tensor for a gate it has not), in the order of a layer's weights.
  size_t biases_per_layer() const {
    const size_t per_layer = matrices_per_layer();
    if (biases.size() == per_layer * (weights.size() / per_layer)) return per_layer;
    return fused_qkv ? 1 : 3;
  }

  Family family() const {
    Family family;
    family.activation = activation >= 0 ? static_cast<Activation>(activation)
                        : relu        ? Activation::kRelu
                        : exact_gelu  ? Activation::kGeluErf
                        : gelu        ? Activation::kGeluTanh
                                      : Activation::kSilu;
    family.query_factor = static_cast<float>(query_factor), family.attention_cap = static_cast<float>(attention_cap);
    family.clip_qkv = static_cast<float>(clip_qkv);
    family.residual_factor = static_cast<float>(residual_scale);
    family.interleaved = interleaved, family.norms_after_rotation = norms_after_rotation;
    family.parallel = parallel;
    family.alibi = alibi;
    family.swiglu_alpha = static_cast<float>(swiglu_alpha), family.swiglu_limit = static_cast<float>(swiglu_limit);
    return family;
  }
};

// Asks for the tensors' metadata (their TensorImpl and storage) ahead of reading it: a step's ~360 tensors are out
// of the caches after the last step streamed the weights, and step_layers reading them one after another, each a
// few dependent misses, took 70-80 us a token (SmolLM2's 30 layers); with their lines asked for at once, 40.
void prefetch_lines(const void* object, size_t size) {
  const char* bytes = static_cast<const char*>(object);
  for (size_t offset = 0; offset < size; offset += 64) prefetch(bytes + offset);
  prefetch(bytes + size - 1);
}

void prefetch_metadata(std::initializer_list<at::ArrayRef<at::Tensor>> lists) {
  for (auto tensors : lists)
    for (const at::Tensor& t : tensors) prefetch_lines(t.unsafeGetTensorImpl(), sizeof(c10::TensorImpl));
  for (auto tensors : lists)
    for (const at::Tensor& t : tensors)
      if (t.defined() && t.has_storage())
        prefetch_lines(t.unsafeGetTensorImpl()->unsafe_storage().unsafeGetStorageImpl(), sizeof(c10::StorageImpl));
}

// softplus(x) as torch computes it (x itself above its threshold of 20), rounded to `type` where that is bfloat16 or
// half, as a module's values in that dtype are.
float softplus_in(at::ScalarType type, float x) { return rounded_to(type, x > 20.f ? x : std::log1p(std::exp(x))); }

// A one-value tensor's number (float32 read in place; other dtypes through torch).
float number_of(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat && t.is_contiguous() ? *t.data_ptr<float>() : t.item<float>();
}

// A layer's xIELU values from its module's alpha_p, alpha_n, beta and eps (StepWeights::set_activation), computed
// as XIELU.forward computes them, in the parameters' dtype.
Xielu xielu_of(const at::Tensor* values) {
  const at::ScalarType type = values[0].scalar_type();
  Xielu x;
  x.beta = number_of(values[2]), x.eps = number_of(values[3]);
  x.alpha_p = softplus_in(type, number_of(values[0]));
  x.alpha_n = rounded_to(type, x.beta + softplus_in(type, number_of(values[1])));
  return x;
}

// The layers of a step's arguments (see decode_step), checked: `rows` sequences in the caches; `converted` keeps
// the norm weights and biases converted to float32 (see norm_weights) for as long as the layers point into them.
std::vector<Layer> step_layers(const char* op, int64_t rows, const StepWeights& stack, at::TensorList keys,
                               at::TensorList values, int64_t pos, int64_t window, std::vector<at::Tensor>& converted,
                               at::ScalarType& layout) {
  const std::vector<at::Tensor>&norms = stack.norms, &weights = stack.weights, &scales = stack.scales,
                               &biases = stack.biases;
  size_t n_layers = keys.size();
  const size_t layer_norms = stack.sandwich ? 4 : 2;  // without q/k norms
  const size_t per_layer = stack.matrices_per_layer(), biases_per_layer = stack.biases_per_layer();
  TORCH_CHECK(n_layers > 0 && weights.size() == per_layer * n_layers &&
                  (norms.size() == layer_norms * n_layers || norms.size() == (layer_norms + 2) * n_layers) &&
                  values.size() == n_layers && (scales.empty() || scales.size() == per_layer * n_layers) &&
                  (biases.empty() || biases.size() == biases_per_layer * n_layers),
              op, ": per layer, expected ", layer_norms, " norms (", layer_norms + 2, " with q/k norms), ", per_layer,
              " weights, ", per_layer, " or no scales, ", biases_per_layer, " or no biases, keys and values");
  const size_t norms_per_layer = norms.size() / n_layers;
  const float offset = static_cast<float>(stack.norm_offset);
  prefetch_metadata({weights, norms, scales, biases, keys, values});
  layout = step_layout(op, weights, stack.experts_layout);
  auto cache_type = keys[0].scalar_type();
  TORCH_CHECK(cache_type == at::kFloat || cache_type == at::kBFloat16, op, ": the cache must be float32 or bfloat16");
  std::vector<Layer> layers;
  TORCH_CHECK(stack.routers.empty() || stack.routers.size() == n_layers, op, ": ", stack.routers.size(),
              " routers for ", n_layers, " layers");
  int64_t expert_offset = 0;  // the next sparse layer's first expert weight in stack.expert_weights
  for (size_t l = 0; l < n_layers; ++l) {
    TORCH_CHECK(keys[l].dim() == 4 && keys[l].size(0) == rows && keys[l].stride(3) == 1 &&
                    values[l].sizes() == keys[l].sizes() && values[l].strides() == keys[l].strides() &&
                    keys[l].scalar_type() == cache_type && values[l].scalar_type() == cache_type,
                op, ": each cache must be (", rows, ", n_kv, capacity, head_dim) with contiguous rows, of one dtype");
    TORCH_CHECK(pos < keys[l].size(2), op, ": position ", pos, " is beyond the cache capacity ", keys[l].size(2));
    auto scale = [&](size_t i) {
      return scales.empty() ? c10::optional<at::Tensor>() : c10::optional<at::Tensor>(scales[per_layer * l + i]);
    };
    auto bias = [&](size_t i) {  // float32 for the kernel: a bfloat16 model's biases converted each step, as they are
      if (biases.empty() || i >= biases_per_layer || biases[biases_per_layer * l + i].numel() == 0)
        return c10::optional<at::Tensor>();
      const at::Tensor& b = biases[biases_per_layer * l + i];
      if (b.scalar_type() == at::kFloat) return c10::optional<at::Tensor>(b);
      converted.push_back(b.to(at::kFloat));
      return c10::optional<at::Tensor>(converted.back());
    };
    const at::Tensor* w = &weights[per_layer * l];
    const at::Tensor* n = &norms[norms_per_layer * l];
    const bool sparse = !stack.routers.empty() && stack.routers[l].numel() > 0;
    auto layer_norm = [&](size_t i) {  // the layer's norm i, with its bias where the norms are LayerNorms
      if (stack.norm_biases.empty()) return norm_weights(n[i], converted, offset, at::Tensor(), stack.centred_norms);
      return norm_weights(n[i], converted, offset, stack.norm_biases[norms_per_layer * l + i]);
    };
    NormWeights attn_norm = layer_norm(0), mlp_norm_weights = layer_norm(stack.sandwich ? 2 : 1);
    // q, k and v, or q/k/v fused; o; gate and up, or gate/up fused; down. An empty gate: an MLP without one
    // (StarCoder2's). A sparse layer's gate, up and down are empty, or its shared expert's.
    auto mlp = [&](size_t i) { return w[i].numel() == 0 ? Matrix{} : matrix(w[i], scale(i), bias(i)); };
    Matrix q, k, v;
    size_t next = 0;  // the layer's next weight
    if (stack.fused_qkv) {
      Matrix qkv = matrix(w[0], scale(0), bias(0));
      int64_t kv_rows = keys[l].size(1) * keys[l].size(3), q_rows = qkv.rows - 2 * kv_rows;
      TORCH_CHECK(q_rows > 0, op, ": layer ", l, "'s fused q/k/v projection has ", qkv.rows,
                  " rows, fewer than the queries' and twice the cache's ", kv_rows);
      q = qkv.rows_from(0, q_rows), k = qkv.rows_from(q_rows, kv_rows), v = qkv.rows_from(q_rows + kv_rows, kv_rows);
      TORCH_CHECK(!stack.qkv_per_head || q_rows % kv_rows == 0, op, ": layer ", l, "'s q/k/v fused per head needs "
                  "a whole number of query heads for each key head (", q_rows, " query rows, ", kv_rows, " key rows)");
      next = 1;
    } else {
      q = matrix(w[0], scale(0), bias(0)), k = matrix(w[1], scale(1), bias(1)), v = matrix(w[2], scale(2), bias(2));
      next = 3;
    }
    Matrix o = matrix(w[next], scale(next), bias(next));
    Matrix gate, up;
    if (stack.fused_gate_up) {
      Matrix gate_up = mlp(next + 1);
      TORCH_CHECK(gate_up.rows % 2 == 0, op, ": layer ", l, "'s fused gate/up projection has an odd count of rows (",
                  gate_up.rows, ")");
      gate = gate_up.rows_from(0, gate_up.rows / 2), up = gate_up.rows_from(gate_up.rows / 2, gate_up.rows / 2);
      next += 2;
    } else {
      gate = mlp(next + 1), up = mlp(next + 2);
      next += 3;
    }
    layers.push_back({q, k, v, o, gate, up, mlp(next), attn_norm, mlp_norm_weights, keys[l], values[l]});
    Layer& layer = layers.back();
    int64_t hidden = layer.o.rows;
    if (stack.qkv_per_head) {
      layer.qkv = q.rows_from(0, q.rows + 2 * k.rows), layer.qkv_per_head = true;
      layer.qkv_block_heads = stack.qkv_block_heads, layer.qkv_values_first = stack.qkv_values_first;
      layer.qkv_group = q.rows / k.rows;
      TORCH_CHECK((k.rows / keys[l].size(3)) % stack.qkv_block_heads == 0, op, ": layer ", l, "'s ",
                  k.rows / keys[l].size(3), " key heads do not fill blocks of ", stack.qkv_block_heads);
    }
    // down's rows are claimed as the residual stream's (Team::claim_rows), so they must be as many.
    TORCH_CHECK(!layer.down.data || layer.down.rows == hidden, op, ": layer ", l, "'s down projection has ",
                layer.down.rows, " rows for a hidden size of ", hidden);
    if (sparse) {
      const at::Tensor& router = stack.routers[l];
      auto router_type = router.scalar_type();
      TORCH_CHECK((router_type == at::kFloat || router_type == at::kBFloat16) && router.dim() == 2 &&
                      router.size(1) == hidden && router.size(0) == stack.expert_counts[l],
                  op, ": layer ", l, "'s router must be float32 or bfloat16 (", stack.expert_counts[l], " experts, ",
                  hidden, "), got ", router_type, " ", router.sizes());
      Mixture& mixture = layer.mixture;
      const bool router_biased = !stack.router_biases.empty() && stack.router_biases[l].numel() > 0;
      mixture.router = matrix(router, {}, router_biased ? c10::optional<at::Tensor>(stack.router_biases[l])
                                                        : c10::optional<at::Tensor>());
      mixture.router_bf16 = router_type == at::kBFloat16;
      mixture.experts = router.size(0);
      mixture.weights = &stack.expert_weights[expert_offset];
      mixture.scales = stack.expert_scales.empty() ? nullptr : &stack.expert_scales[expert_offset];
      mixture.paired_gate_up = stack.paired_gate_up, mixture.in_major = stack.experts_in_major;
      mixture.sparsemixer = stack.sparsemixer, mixture.sparsemixer_eps = static_cast<float>(stack.sparsemixer_eps);
      if (!stack.expert_biases.empty()) mixture.biases = &stack.expert_biases[2 * (expert_offset / 3)];
      // each expert's width: its gate's rows (half of them where gate and up alternate), or its down's inputs
      const at::Tensor& width_of = mixture.in_major ? mixture.weights[2] : mixture.weights[0];
      mixture.width = width_of.dim() != 2 ? 0 : mixture.in_major ? width_of.size(0)
                      : width_of.size(0) / (mixture.paired_gate_up ? 2 : 1);
      TORCH_CHECK(mixture.width > 0, op, ": layer ", l, "'s first expert's gate must be a 2-D weight");
      mixture.top_k = stack.top_k;
      mixture.normalize = stack.normalize_experts, mixture.round_weights = stack.round_expert_weights;
      expert_offset += 3 * mixture.experts;
      const at::Tensor* shared_gate = stack.shared_gates.empty() ? nullptr : &stack.shared_gates[l];
      if (shared_gate && shared_gate->numel() > 0) {
        TORCH_CHECK(shared_gate->scalar_type() == router_type && shared_gate->dim() == 2 && shared_gate->size(0) == 1 &&
                        shared_gate->size(1) == hidden,
                    op, ": layer ", l, "'s shared expert's gate must be one row of its router's dtype (1, ", hidden,
                    "), got ", shared_gate->scalar_type(), " ", shared_gate->sizes());
        mixture.shared_gate = matrix(*shared_gate, {}, {});
      }
      TORCH_CHECK((!mixture.shared_gate.data || layer.up.data) && !layer.up.data == !layer.gate.data, op, ": layer ",
                  l, "'s shared expert needs its gate, up and down weights (and its gate, where set_shared_experts "
                  "gave one), or none");
      mixture.norm_min = static_cast<float>(stack.norm_min);
      mixture.sigmoid = stack.sigmoid_experts, mixture.groups = stack.expert_groups;
      mixture.chosen_groups = stack.chosen_expert_groups, mixture.group_best = stack.group_best;
      mixture.scale = static_cast<float>(stack.routed_scale);
      if (!stack.corrections.empty()) {
        const at::Tensor& correction = stack.corrections[l];
        TORCH_CHECK(correction.numel() == mixture.experts && correction.is_contiguous(), op, ": layer ", l,
                    "'s correction must hold one value per expert (", mixture.experts, "), got ", correction.sizes());
        converted.push_back(correction.to(at::kFloat));
        mixture.correction = converted.back().data_ptr<float>();
      }
    }
    for (size_t i = 0; i < layer_norms; ++i)  // the inputs' norms may be absent (empty) beside sandwich norms: OLMo 2
      TORCH_CHECK(n[i].numel() == hidden || (stack.sandwich && i % 2 == 0 && n[i].numel() == 0), op, ": layer ", l,
                  "'s norm ", i, " has ", n[i].numel(), " weights for a hidden size of ", hidden);
    if (stack.sandwich) {
      layer.attn_out_norm = layer_norm(1);
      layer.mlp_out_norm = layer_norm(3);
    }
    if (norms_per_layer == layer_norms + 2) {
      int64_t head_dim = keys[l].size(3), q_size = n[layer_norms].numel(), k_size = n[layer_norms + 1].numel();
      const bool every_row = q_size == layer.q.rows && k_size == layer.k.rows && q_size != head_dim;
      layer.whole_qk_norms = every_row && !stack.qk_norms_per_head;
      layer.qk_norms_per_head = every_row && stack.qk_norms_per_head;
      TORCH_CHECK((q_size == head_dim && k_size == head_dim) || every_row, op,
                  ": the q and k norms must hold head_dim weights each, or as many as the queries and the keys (",
                  layer.q.rows, ", ", layer.k.rows, "), got ", q_size, " and ", k_size);
      layer.q_norm = layer_norm(layer_norms);
      layer.k_norm = layer_norm(layer_norms + 1);
    }
    if (!stack.xielu_values.empty()) layer.xielu = xielu_of(&stack.xielu_values[4 * l]);
    if (!stack.sinks.empty() && stack.sinks[l].numel() > 0) {
      TORCH_CHECK(stack.sinks[l].numel() == layer.q.rows / keys[l].size(3), op, ": layer ", l, "'s sinks hold ",
                  stack.sinks[l].numel(), " values for ", layer.q.rows / keys[l].size(3), " query heads");
      layer.sinks = stack.sinks[l].data_ptr<float>();
    }
    layer.local = !stack.sliding.empty() && stack.sliding[l];
    layer.rotates = stack.unrotated.empty() || !stack.unrotated[l];
    layer.attention_scale = stack.attention_scales.empty() ? 1.f : static_cast<float>(stack.attention_scales[l]);
    layer.window = stack.sliding.empty() || layer.local ? window : 0;
  }
  return layers;
}

// The widest gate and up of any layer (a mixture's: its chosen experts' together, or its shared expert's), and the
// most experts a router scores: what a step's MLP buffers hold for one row.
std::pair<int64_t, int64_t> mlp_buffer_sizes(const std::vector<Layer>& layers) {
  int64_t rows = 0, experts = 0;
  for (const Layer& L : layers) {
    const Mixture& M = L.mixture;
    rows = std::max({rows, M.top_k * M.width * (M.paired_gate_up ? 2 : 1), L.up.rows});
    experts = std::max(experts, M.experts);
  }
  return {rows, experts};
}

// The final norm's weights, read as stored where they can be (norm_weights), checked against the hidden size; null
// data when the caller gives none.
NormWeights final_norm_weights(const char* op, const c10::optional<at::Tensor>& norm, int64_t hidden,
                               const StepWeights& stack, std::vector<at::Tensor>& converted) {
  if (!norm || !norm->defined()) return {nullptr, false};
  TORCH_CHECK(norm->numel() == hidden, op, ": the final norm has ", norm->numel(), " weights for a hidden size of ",
              hidden);
  const at::Tensor& bias = stack.norm_biases.empty() ? at::Tensor() : stack.norm_biases.back();
  return norm_weights(*norm, converted, static_cast<float>(stack.norm_offset), bias, stack.centred_norms);
}

// Whether logit v at index i comes before `best` at index `at` (at < 0: none yet) in torch.argmax's order: the larger
// value, NaN above every number, the lower index among equals.
inline bool argmax_before(float v, int64_t i, float best, int64_t at) {
  if (at < 0) return true;
  bool v_nan = v != v, best_nan = best != best;
  if (v_nan || best_nan) return v_nan && (!best_nan || i < at);
  return v > best || (v == best && i < at);
}

// The float32 input of a step for the token whose id `tokens` holds (one int64): its row of `embedding` (float32 or
// bfloat16, a row per token id), read here by decode_step where the embedding module's call and the row's
// conversion to float32 were ~70-120 us a token (three operations after a step had flushed the caches). A `scale`
// other than 1 multiplies the row as Gemma's embedding does, in the table's dtype: a bfloat16 row times the scale
// rounded to bfloat16, the product rounded to bfloat16. embed_row writes the row of a checked table into xd.
void embed_row(int64_t id, const at::Tensor& embedding, double scale, float* xd) {
  int64_t cols = embedding.size(1);
  TORCH_CHECK(0 <= id && id < embedding.size(0), "decode_step: token id ", id, " is outside the embedding's ",
              embedding.size(0), " rows");
  if (embedding.scalar_type() == at::kFloat) {
    const float* row = embedding.data_ptr<float>() + id * cols;
    const float factor = static_cast<float>(scale);
    if (scale == 1.) std::copy_n(row, cols, xd);
    else for (int64_t i = 0; i < cols; ++i) xd[i] = row[i] * factor;
  } else {
    const c10::BFloat16* row = embedding.data_ptr<c10::BFloat16>() + id * cols;
    const float factor = static_cast<float>(c10::BFloat16(static_cast<float>(scale)));
    if (scale == 1.) for (int64_t i = 0; i < cols; ++i) xd[i] = static_cast<float>(row[i]);
    else
      for (int64_t i = 0; i < cols; ++i) xd[i] = static_cast<float>(c10::BFloat16(static_cast<float>(row[i]) * factor));
  }
}

// Adds the row of learned positions (StepWeights::set_positions; none where `table` is undefined) at `position` to a
// token's embedded row xd, as the layers add the two embeddings in their dtype: a bfloat16 model's sum rounded to
// bfloat16.
void add_position_row(const at::Tensor& table, int64_t position, float* xd) {
  if (!table.defined()) return;
  TORCH_CHECK(0 <= position && position < table.size(0), "decode_step: position ", position,
              " is outside the learned positions' ", table.size(0), " rows");
  int64_t cols = table.size(1);
  if (table.scalar_type() == at::kFloat) {
    const float* row = table.data_ptr<float>() + position * cols;
    for (int64_t i = 0; i < cols; ++i) xd[i] += row[i];
  } else {
    const c10::BFloat16* row = table.data_ptr<c10::BFloat16>() + position * cols;
    for (int64_t i = 0; i < cols; ++i) xd[i] = static_cast<float>(c10::BFloat16(xd[i] + static_cast<float>(row[i])));
  }
}

// A token's embedded row xd normed by the stack's embedding norm (StepWeights::set_embedding_norm; none where it has
// none), rounded to bfloat16 for a bfloat16 `embedding`, as the layers' LayerNorm hands it on in their dtype.
void apply_embedding_norm(const StepWeights& stack, const at::Tensor& embedding, float* xd) {
  if (!stack.embedding_norm_weight.defined()) return;
  const int64_t cols = embedding.size(1);
  TORCH_CHECK(stack.embedding_norm_weight.numel() == cols, "decode_step: the embedding norm has ",
              stack.embedding_norm_weight.numel(), " weights for rows of ", cols);
  std::vector<at::Tensor> converted;
  NormWeights norm = norm_weights(stack.embedding_norm_weight, converted, 0.f, stack.embedding_norm_bias);
  apply_norm(xd, norm, static_cast<float>(stack.embedding_norm_eps), xd, cols);
  if (embedding.scalar_type() == at::kBFloat16)
    for (int64_t i = 0; i < cols; ++i) xd[i] = static_cast<float>(c10::BFloat16(xd[i]));
}

at::Tensor embedded_row(const at::Tensor& tokens, const at::Tensor& embedding, double scale) {
  TORCH_CHECK(tokens.scalar_type() == at::kLong && tokens.numel() == 1,
              "decode_step: with an embedding, x must hold one int64 token id, got ", tokens.scalar_type(), " ",
              tokens.sizes());
  auto type = embedding.scalar_type();
  TORCH_CHECK(embedding.dim() == 2 && embedding.is_contiguous() && (type == at::kFloat || type == at::kBFloat16),
              "decode_step: the embedding must be a contiguous 2-D float32 or bfloat16 table");
  at::Tensor x = at::empty({embedding.size(1)}, embedding.options().dtype(at::kFloat));
  embed_row(tokens.item<int64_t>(), embedding, scale, x.data_ptr<float>());
  return x;
}

// How many of each head's `head_dim` values a call's rotary angles turn: the width of its cos, a table
// (positions, width) with a `row`, else (width,) or (rows, width) for `rows` positions. Even, and at most head_dim.
int64_t rotary_width(const char* op, const at::Tensor& cos, int64_t row, int64_t rows, int64_t head_dim) {
  int64_t width = row >= 0 ? (cos.dim() == 2 ? cos.size(1) : -1) : cos.numel() / std::max(rows, int64_t(1));
  TORCH_CHECK(width > 0 && width % 2 == 0 && width <= head_dim && (row >= 0 || cos.numel() == rows * width), op,
              ": cos must hold an even number of angles per position, at most the heads' size (", head_dim,
              "), for ", rows, " position(s), got ", cos.sizes());
  return width;
}

// decode_step's rotary angles, `width` float32 values (rotary_width): `angles` is a position's row (width,), or
// with `row` >= 0 the whole table (positions, width), the rotary module's own buffer, whose row that is (indexing
// it in Python cost two operations a token). float32 is read where it lies, where three ATen operations to select
// and convert the row cost ~15 us a token, their code out of the caches after the last step; other dtypes are
// converted (and kept in `converted`).
const float* rotary_angles(const char* name, const at::Tensor& angles, int64_t row, int64_t width,
                           std::vector<at::Tensor>& converted) {
  if (row >= 0) {
    TORCH_CHECK(angles.dim() == 2 && row < angles.size(0) && angles.size(1) == width, "decode_step: rotary row ",
                row, " of a ", name, " table of (positions, ", width, ") values, got ", angles.sizes());
    if (angles.scalar_type() == at::kFloat && angles.stride(1) == 1)
      return angles.data_ptr<float>() + row * angles.stride(0);
    converted.push_back(angles.select(0, row).to(at::kFloat).contiguous());
  } else {
    TORCH_CHECK(angles.numel() == width, "decode_step: ", name, " must hold ", width,
                " values (cos's width), got ", angles.sizes());
    if (angles.scalar_type() == at::kFloat && angles.is_contiguous()) return angles.data_ptr<float>();
    converted.push_back(angles.to(at::kFloat).contiguous());
  }
  return converted.back().data_ptr<float>();
}

// Runs every layer for one token, in place on `x` (hidden,) float32, writing this position's key and value
// into each layer's cache buffers (1, n_kv, capacity, head_dim) at `pos`, with the layers' tensors of `stack`
// (StepWeights; scales are int8's float32 scales per block of 32 or int4's float16 (scale, minimum) pairs). One
// OpenMP team runs the whole step, so threads start once per token rather than several times per layer.
// With `norm`, x leaves normed by the final norm (in float32, as decode_batch norms each row). With `head` too (the
// language-model head's weight, and `head_scale` when it is quantized, in any of the layers' layouts) the same
// team goes on through the head's product, and the step returns the (1, vocab) float32 logits, equal to matvec's
// of the normed x; else an empty tensor. The head then costs no team of its own, and its first rows are on their way
// while the last layer finishes. With `bfloat16_logits` the logits are rounded to bfloat16 values (a bfloat16
// model's), still float32: generate's loop takes logits as float32 (and argmax over bfloat16 ones took 180-220 us
// a token, twice float32's), so rounding them here spares it the conversion to bfloat16 and back, two passes.
// The second output is the logits' argmax as torch.argmax gives it, a (1,) int64 tensor (-1 without the head):
// each thread takes the largest of the rows it made while they are in its L1 cache, where torch's argmax read the
// 49152 logits again after the step, 90-100 us a token. With `follow_team`, see follow_team_size. With
// `embedding`, x holds the token's id instead, and the step's input is its row of `embedding` (embedded_row); x is
// left as it is. With `rotary_row`, cos and sin are whole tables (see rotary_angles). Their width is head_dim, or
// fewer where only a head's leading dimensions turn (Family::rotary_dims).
//
// step_tokens runs `count` such steps where `ids` is given (decode_tokens), each fed the argmax of the one before.
std::tuple<at::Tensor, at::Tensor, int64_t> step_tokens(
    at::Tensor x, const c10::intrusive_ptr<StepWeights>& stack, at::TensorList keys, at::TensorList values, int64_t pos,
    int64_t window, at::Tensor cos, at::Tensor sin, double eps, c10::optional<at::Tensor> norm,
    c10::optional<at::Tensor> head, c10::optional<at::Tensor> head_scale, bool bfloat16_logits, bool follow_team,
    c10::optional<at::Tensor> embedding, int64_t rotary_row, c10::optional<at::Tensor> local_cos,
    c10::optional<at::Tensor> local_sin, int64_t count, at::IntArrayRef eos, int64_t* ids, double seconds) {
  const int64_t deadline = wall_ns() + static_cast<int64_t>(seconds * 1e9);
  if (embedding && embedding->defined()) {
    x = embedded_row(x, *embedding, stack->embedding_scale);
    TORCH_CHECK(!stack->positions.defined() || stack->positions.size(1) == x.numel(), "decode_step: the learned "
                "positions' rows hold ", stack->positions.size(1), " values, the embedding's ", x.numel());
    add_position_row(stack->positions, rotary_row, x.data_ptr<float>());  // (a run's last one checked below)
    apply_embedding_norm(*stack, *embedding, x.data_ptr<float>());
  }
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous(), "decode_step: x must be contiguous float32");
  std::vector<at::Tensor> converted;
  at::ScalarType weight_type;
  // (the run's last position checked against the caches' capacity)
  std::vector<Layer> layers =
      step_layers("decode_step", 1, *stack, keys, values, pos + count - 1, window, converted, weight_type);
  Family family = stack->family();
  size_t n_layers = layers.size();
  bool bf16_cache = keys[0].scalar_type() == at::kBFloat16;
  const Layer& first = layers[0];
  const std::pair<int64_t, int64_t> sizes = mlp_buffer_sizes(layers);
  const int64_t mlp_rows = sizes.first, most_experts = sizes.second;
  Shared S{std::vector<float>(first.q.rows), std::vector<float>(first.k.rows), std::vector<float>(first.v.rows),
           std::vector<float>(first.o.cols),  std::vector<float>(first.o.rows), std::vector<float>(mlp_rows),
           std::vector<float>(mlp_rows), std::vector<float>(most_experts),
           std::vector<float>(most_experts ? stack->top_k * first.o.rows : 0), std::vector<float>(1)};
  if (first.qkv_per_head) S.qkv.resize(first.qkv.rows);
  int64_t most_key_heads = 0;
  for (const Layer& L : layers) most_key_heads = std::max(most_key_heads, L.keys.size(1));
  S.key_rows_made.reset(new std::atomic<int64_t>[most_key_heads]());
  std::atomic<bool> unusable{false};  // an expert the router picked whose weights are not the step's (mixture_step)
  family.rotary_dims = rotary_width("decode_step", cos, rotary_row, 1, first.keys.size(3));
  TORCH_CHECK(local_cos.has_value() == local_sin.has_value(), "decode_step: give local_cos and local_sin together");
  const float *c, *s, *local_c, *local_s;  // the position's angles; the sliding layers' (Layer::local)
  auto turn_to = [&](int64_t row) {
    c = rotary_angles("cos", cos, row, family.rotary_dims, converted);
    s = rotary_angles("sin", sin, row, family.rotary_dims, converted);
    local_c = c, local_s = s;
    if (local_cos && local_cos->defined()) {
      local_c = rotary_angles("local_cos", *local_cos, row, family.rotary_dims, converted);
      local_s = rotary_angles("local_sin", *local_sin, row, family.rotary_dims, converted);
    }
  };
  if (count > 1) turn_to(rotary_row + count - 1);  // the run's last rows checked before any step
  TORCH_CHECK(!stack->positions.defined() || rotary_row + count <= stack->positions.size(0), "decode_step: a run of ",
              count, " tokens from position ", rotary_row, " is past the learned positions' ", stack->positions.size(0),
              " rows");
  turn_to(rotary_row);
  float* xd = x.data_ptr<float>();
  float epsf = static_cast<float>(eps);

  int64_t hidden = first.o.rows;
  TORCH_CHECK(x.numel() == hidden, "decode_step: x has ", x.numel(), " values for a hidden size of ", hidden);
  NormWeights norm_f = final_norm_weights("decode_step", norm, hidden, *stack, converted);
  at::Tensor logits = at::empty({0}, x.options());
  bool with_head = head && head->defined();
  Matrix head_m{};
  auto head_type = with_head ? head->scalar_type() : at::kFloat;
  if (with_head) {
    c10::optional<at::Tensor> head_bias;
    if (stack->head_bias.defined() && stack->head_bias.numel() > 0) {
      TORCH_CHECK(stack->head_bias.numel() == head->size(0), "decode_step: the head's bias has ",
                  stack->head_bias.numel(), " values for its ", head->size(0), " rows");
      head_bias = stack->head_bias;  // (float32 and contiguous: set_head_bias)
    }
    head_m = matrix(*head, head_scale, head_bias);
    TORCH_CHECK(norm_f.data, "decode_step: a head needs the final norm");
    TORCH_CHECK(head_m.cols == hidden, "decode_step: the head takes ", head_m.cols, " values per row, x has ", hidden);
    TORCH_CHECK(head_type == at::kFloat || head_type == at::kBFloat16 || head_type == at::kChar ||
                    head_type == at::kByte,
                "decode_step: the head must be float32, bfloat16, int8 or int4 (uint8), got ", head_type);
    logits = at::empty({1, head_m.rows}, x.options());  // a batch of one row, as generate's loop takes them
  }
  float* logits_d = logits.data_ptr<float>();
  float top = 0;  // the argmax over every thread's rows (argmax_before's order)
  int64_t top_at = -1;
  std::mutex argmax_merge;
  std::vector<float> normed_x(with_head ? hidden : 0);  // x normed by the final norm, where the step runs the head

  auto run = [&](auto weight_tag) {
    using W = decltype(weight_tag);
    // the head: a copy, a product; sandwich norms without the head: the residual stream's copy
    in_team(kLoopsPerLayer * n_layers + (with_head || stack->sandwich ? 2 : 0), [&](Team& team) {
      std::vector<float> normed(first.o.rows), activated(mlp_rows), scores;
      Rounded in;
      std::vector<Rounded> expert_inputs(most_experts ? stack->top_k : 0);
      // With sandwich norms every thread updates its own copy of the residual stream (see layer_step).
      std::vector<float> own_x(stack->sandwich ? hidden : 0);
      std::copy(xd, xd + own_x.size(), own_x.begin());
      float* x = stack->sandwich ? own_x.data() : xd;
      for (size_t l = 0; l < n_layers; ++l) {
        const Layer& L = layers[l];
        const float *lc = L.local ? local_c : c, *ls = L.local ? local_s : s;
        if (bf16_cache)
          layer_step<W, c10::BFloat16>(team, x, L, family, S, epsf, pos, lc, ls, normed, activated, in, scores,
                                       expert_inputs, unusable);
        else
          layer_step<W, float>(team, x, L, family, S, epsf, pos, lc, ls, normed, activated, in, scores, expert_inputs,
                               unusable);
        if (l + 1 < n_layers) {
          team.prefetch_share(Stacked{&layers[l + 1].q, &layers[l + 1].k, &layers[l + 1].v});
        } else if (with_head) {
          team.prefetch_share(head_m);
        }
        if (l + 1 < n_layers || with_head || stack->sandwich) team.wait();
        if (stack->sandwich) add_normed(x, S.out.data(), L.mlp_out_norm, epsf, normed.data(), hidden);
      }
      if (!with_head) {
        if (stack->sandwich)  // one of the threads still in the team hands its copy back
          team.claim(1, 1, 1, [&](int64_t, int64_t) { std::copy(own_x.begin(), own_x.end(), xd); });
        return;
      }
      // As in a layer, each thread norms and rounds the whole x itself. One of those that met at the barrier (a
      // thread that left the team may have normed x before it was done) keeps its normed x for the caller, in a
      // buffer of its own: x itself is still being read (and S.out by the sandwich norms of slower threads).
      apply_norm(x, norm_f, epsf, normed.data(), hidden);
      team.claim(1, 1, 1, [&](int64_t, int64_t) { std::copy(normed.begin(), normed.end(), normed_x.begin()); });
      auto head_rows = [&](auto head_tag) {
        using H = decltype(head_tag);
        in.set<H>(normed.data(), head_m.cols);
        float best = 0;
        int64_t at = -1;
        team.claim_rows(head_m, [&](int64_t begin, int64_t end) {
          product_rows<H>(head_m, begin, end, in, logits_d);
          for (int64_t i = begin; i < end; ++i) {
            // Rounded as .to(torch.bfloat16) rounds (to nearest even).
            if (bfloat16_logits) logits_d[i] = static_cast<float>(c10::BFloat16(logits_d[i]));
            if (argmax_before(logits_d[i], i, best, at)) best = logits_d[i], at = i;
          }
        });
        std::lock_guard<std::mutex> lock(argmax_merge);
        if (at >= 0 && argmax_before(best, at, top, top_at)) top = best, top_at = at;
      };
      with_layout(head_type, "decode_step: the head", head_rows);  // checked before the team
    });
  };
  int64_t produced = 0;
  for (;;) {
    with_layout(weight_type, "decode_step", run);
    check_experts_usable("decode_step", unusable, weight_type);
    if (ids == nullptr) break;
    ids[produced++] = top_at;
    if (produced == count || std::find(eos.begin(), eos.end(), top_at) != eos.end() || wall_ns() >= deadline) break;
    embed_row(top_at, *embedding, stack->embedding_scale, xd);  // the next step's token, at the next position
    add_position_row(stack->positions, rotary_row + produced, xd);
    apply_embedding_norm(*stack, *embedding, xd);
    ++pos;
    turn_to(rotary_row + produced);
    top = 0, top_at = -1;
  }
  if (with_head) std::copy(normed_x.begin(), normed_x.end(), xd);
  else if (norm_f.data) apply_norm(xd, norm_f, epsf, xd, hidden);
  if (follow_team) follow_team_size();
  return {logits, at::full({1}, top_at, x.options().dtype(at::kLong)), produced};
}

std::tuple<at::Tensor, at::Tensor> decode_step(at::Tensor x, const c10::intrusive_ptr<StepWeights>& stack,
                                               at::TensorList keys, at::TensorList values, int64_t pos, int64_t window,
                                               at::Tensor cos, at::Tensor sin, double eps,
                                               c10::optional<at::Tensor> norm, c10::optional<at::Tensor> head,
                                               c10::optional<at::Tensor> head_scale, bool bfloat16_logits,
                                               bool follow_team, c10::optional<at::Tensor> embedding,
                                               int64_t rotary_row, c10::optional<at::Tensor> local_cos,
                                               c10::optional<at::Tensor> local_sin) {
  auto ran = step_tokens(x, stack, keys, values, pos, window, cos, sin, eps, norm, head, head_scale, bfloat16_logits,
                         follow_team, embedding, rotary_row, local_cos, local_sin, 1, {}, nullptr, 0.);
  return {std::get<0>(ran), std::get<1>(ran)};
}

// Greedy decoding of one sequence for up to `count` tokens in one call: decode_step fed `tokens` (one int64 id) at
// `pos`, then each step's argmax at the next position, until `count` tokens are made, one of them is in `eos` or
// one ends past `seconds` of the call (Python sees a keyboard interrupt only between calls, where a large model's
// run of hundreds of tokens would last minutes).
// Writes the tokens into ids[0], ids[1], ... and returns how many it made; the caches hold their keys and values
// at pos, pos + 1, ... (one position per token made). The rotary tables (`rotary_row`: the first position's row)
// must reach the last position. What a token costs between two decode_step calls (the op's call and return,
// generate's loop: 0.3-0.45 ms of a 5.3-8 ms SmolLM2 bfloat16 token, mostly code and data the step's stream of
// weights has pushed out of the caches) a run pays once.
int64_t decode_tokens(at::Tensor tokens, const c10::intrusive_ptr<StepWeights>& stack, at::TensorList keys,
                      at::TensorList values, int64_t pos, int64_t window, at::Tensor cos, at::Tensor sin, double eps,
                      c10::optional<at::Tensor> norm, c10::optional<at::Tensor> head,
                      c10::optional<at::Tensor> head_scale, bool bfloat16_logits, bool follow_team,
                      c10::optional<at::Tensor> embedding, int64_t rotary_row, c10::optional<at::Tensor> local_cos,
                      c10::optional<at::Tensor> local_sin, int64_t count, at::IntArrayRef eos, at::Tensor ids,
                      double seconds) {
  TORCH_CHECK(count >= 1, "decode_tokens: count must be at least 1, got ", count);
  TORCH_CHECK(head && head->defined() && embedding && embedding->defined(),
              "decode_tokens: feeding each argmax back needs the head and the embedding");
  TORCH_CHECK(rotary_row >= 0, "decode_tokens: cos and sin must be whole tables, with rotary_row their first row");
  TORCH_CHECK(ids.scalar_type() == at::kLong && ids.dim() == 1 && ids.is_contiguous() && ids.numel() >= count,
              "decode_tokens: ids must be a contiguous 1-D int64 tensor of at least ", count, " values, got ",
              ids.scalar_type(), " ", ids.sizes());
  return std::get<2>(step_tokens(tokens, stack, keys, values, pos, window, cos, sin, eps, norm, head, head_scale,
                                 bfloat16_logits, follow_team, embedding, rotary_row, local_cos, local_sin, count, eos,
                                 ids.data_ptr<int64_t>(), seconds));
}

#ifdef __AVX512F__
// The sums of 16 vectors' lanes, lane i holding v[i]'s: a tree of 15 shuffled additions (45 instructions), where
// reducing each vector alone took ~8 apiece.
inline __m512 lane_sums16(const __m512* v) {
  __m512 pairs[8], quads[4], halves[2];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3]
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: the partial sums of four vectors, in order
    __m512d a = _mm512_castps_pd(pairs[2 * i]), b = _mm512_castps_pd(pairs[2 * i + 1]);
    quads[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  for (int i = 0; i < 2; ++i)  // the 128-bit lanes added in pairs
    halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0x88),
                              _mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(halves[0], halves[1], 0x88), _mm512_shuffle_f32x4(halves[0], halves[1], 0xDD));
}

// out[j * out_stride + row + r] = the lane sum of sums[r][j], for tiles of 16 sums without a tail of columns.
template <int R, int N>
inline void store_lane_sums(__m512 (&sums)[R][N], float* out, int64_t row, int64_t out_stride) {
  static_assert(R * N == 16);
  __m512 ordered[16];
  for (int j = 0; j < N; ++j)
    for (int r = 0; r < R; ++r) ordered[j * R + r] = sums[r][j];
  alignas(64) float totals[16];
  _mm512_store_ps(totals, lane_sums16(ordered));
  for (int j = 0; j < N; ++j)
    for (int r = 0; r < R; ++r) out[j * out_stride + row + r] = totals[j * R + r];
}

// R weight rows times N inputs: each weight vector is loaded and widened once for all N inputs, with R x N sums
// in registers; out[j * out_stride + r] for input j. Four rows take up to four inputs; two rows take 5-8 (see
// two_rows_times_all). The R rows are one contiguous block, read as R short streams that the hardware
// prefetchers pick up late (see row_avx512); each step prefetches as many bytes of the next block, front to
// back, as it reads of this one, so the next block is in the cache by the time it is read. Into the L2 cache
// (prefetch_to_l2), as the rows of one input: prefetched into the L1 the lines filled its miss buffers and the
// loads waited (SmolLM2 at two threads, a step of 8 rows float32 27.7 -> 20.7 ms, of 32 66.2 -> 58.6, bfloat16
// 14.2 -> 12.6 and 38.1 -> 37.0; a 16-token prompt float32 35.0 -> 29.6, bfloat16 18.6 -> 16.9).
template <typename W, int R, int N>
inline void rows_times_tile(const Matrix& m, int64_t row, const float* x, float* out, int64_t out_stride) {
  const W* w = static_cast<const W*>(m.data) + row * m.cols;
  const char* next = reinterpret_cast<const char*>(w + R * m.cols);
  __m512 sums[R][N];
  for (auto& per_row : sums)
    for (auto& sum : per_row) sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= m.cols; i += 16) {
    for (int64_t b = 0; b < R * 16 * int64_t(sizeof(W)); b += 64) prefetch_to_l2(next + R * i * int64_t(sizeof(W)) + b);
    __m512 wr[R];
    for (int r = 0; r < R; ++r) wr[r] = load16(w + r * m.cols + i);
    for (int j = 0; j < N; ++j) {
      __m512 xj = _mm512_loadu_ps(x + j * m.cols + i);
      // In a register for the R multiply-adds: GCC folds the load into each of them, R loads of every input
      // vector, and two rows times eight inputs then waited on loads (18 a step for 16 multiply-adds). Held, 1536 x
      // 576 float32 times 32 inputs on two threads took 0.31 ms against 0.37; SmolLM2's head 13.1 against 14.8.
      // (vdpbf16ps' folded loads cost nothing: bfloat16 is as fast or faster without this.)
      asm("" : "+v"(xj));
      for (int r = 0; r < R; ++r) sums[r][j] = _mm512_fmadd_ps(wr[r], xj, sums[r][j]);
    }
  }
  if constexpr (R * N == 16) {
    if (i == m.cols) return store_lane_sums<R, N>(sums, out, row, out_stride);
  }
  for (int j = 0; j < N; ++j)
    for (int r = 0; r < R; ++r) {
      float sum = _mm512_reduce_add_ps(sums[r][j]);
      for (int64_t k = i; k < m.cols; ++k) sum += as_float(w[r * m.cols + k]) * x[j * m.cols + k];
      out[j * out_stride + row + r] = sum;
    }
}

#ifdef __AVX512BF16__
// rows_times_tile for bfloat16 weights and inputs rounded to bfloat16, with vdpbf16ps: 32 pairs per instruction,
// where widening took three instructions per 16 weights and left 8 inputs compute-bound.
template <int R, int N>
inline void rows_times_tile_bf16(const Matrix& m, int64_t row, const c10::BFloat16* xb, float* out, int64_t out_stride) {
  const c10::BFloat16* w = static_cast<const c10::BFloat16*>(m.data) + row * m.cols;
  const char* next = reinterpret_cast<const char*>(w + R * m.cols);
  __m512 sums[R][N];
  for (auto& per_row : sums)
    for (auto& sum : per_row) sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= m.cols; i += 32) {
    for (int64_t b = 0; b < R * 64; b += 64) prefetch_to_l2(next + R * 2 * i + b);
    __m512bh wr[R];
    for (int r = 0; r < R; ++r) wr[r] = bfloat16_pairs(w + r * m.cols + i);
    for (int j = 0; j < N; ++j) {
      __m512bh xj = bfloat16_pairs(xb + j * m.cols + i);
      for (int r = 0; r < R; ++r) sums[r][j] = _mm512_dpbf16_ps(sums[r][j], wr[r], xj);
    }
  }
  if constexpr (R * N == 16) {
    if (i == m.cols) return store_lane_sums<R, N>(sums, out, row, out_stride);
  }
  for (int j = 0; j < N; ++j)
    for (int r = 0; r < R; ++r) {
      float sum = _mm512_reduce_add_ps(sums[r][j]);
      for (int64_t k = i; k < m.cols; ++k) sum += as_float(w[r * m.cols + k]) * as_float(xb[j * m.cols + k]);
      out[j * out_stride + row + r] = sum;
    }
}

inline void four_rows_times_bf16_all(const Matrix& m, int64_t row, const c10::BFloat16* xb, int64_t n, float* out,
                                     int64_t out_stride) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) rows_times_tile_bf16<4, 4>(m, row, xb + j * m.cols, out + j * out_stride, out_stride);
  switch (n - j) {
    case 3: rows_times_tile_bf16<4, 3>(m, row, xb + j * m.cols, out + j * out_stride, out_stride); break;
    case 2: rows_times_tile_bf16<4, 2>(m, row, xb + j * m.cols, out + j * out_stride, out_stride); break;
    case 1: rows_times_tile_bf16<4, 1>(m, row, xb + j * m.cols, out + j * out_stride, out_stride); break;
  }
}
#endif

// Rows [begin, end) of W, two at a time, times n inputs, 5 <= n <= 8 (a batch decoding one token per sequence;
// `rounded`: bfloat16 weights' inputs rounded to bfloat16); returns the first row left (one, when end - begin is
// odd). Each weight vector is loaded once for all n inputs, 2 x n sums in registers, so a weight load feeds n
// multiply-adds. Four rows times four inputs (twice for eight) load each weight vector twice and were
// compute-bound at about half the rate: 8 inputs x 1536 x 576 float32 on one core, CPU time, weights in the L3
// cache, 445-475 -> 251-290 us; cold 500-660 -> 370 us (a loaded machine).
template <typename W>
inline int64_t two_rows_times_all(const Matrix& m, int64_t begin, int64_t end, const float* x, const void* rounded,
                                  int64_t n, float* out, int64_t out_stride) {
  auto tile = [&](auto inputs, int64_t r) {
    constexpr int N = decltype(inputs)::value;
#ifdef __AVX512BF16__
    if constexpr (std::is_same_v<W, c10::BFloat16>) {
      rows_times_tile_bf16<2, N>(m, r, static_cast<const c10::BFloat16*>(rounded), out, out_stride);
      return;
    }
#endif
    rows_times_tile<W, 2, N>(m, r, x, out, out_stride);
  };
  int64_t r = begin;
  for (; r + 2 <= end; r += 2) {
    switch (n) {
      case 5: tile(std::integral_constant<int, 5>{}, r); break;
      case 6: tile(std::integral_constant<int, 6>{}, r); break;
      case 7: tile(std::integral_constant<int, 7>{}, r); break;
      default: tile(std::integral_constant<int, 8>{}, r); break;
    }
    if (m.bias)
      for (int64_t k = 0; k < n; ++k)
        for (int64_t q = r; q < r + 2; ++q) out[k * out_stride + q] += m.bias[q];
  }
  return r;
}

// Four weight rows times all n inputs, four inputs at a time.
template <typename W>
inline void four_rows_times_all(const Matrix& m, int64_t row, const float* x, int64_t n, float* out, int64_t out_stride) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) rows_times_tile<W, 4, 4>(m, row, x + j * m.cols, out + j * out_stride, out_stride);
  switch (n - j) {
    case 3: rows_times_tile<W, 4, 3>(m, row, x + j * m.cols, out + j * out_stride, out_stride); break;
    case 2: rows_times_tile<W, 4, 2>(m, row, x + j * m.cols, out + j * out_stride, out_stride); break;
    case 1: rows_times_tile<W, 4, 1>(m, row, x + j * m.cols, out + j * out_stride, out_stride); break;
  }
}
#endif

// Rows [begin, end) of W times n inputs x (n, cols): out[j * out_stride + r]. Four inputs at a time share each
// widened weight vector; the rows left over take the one-input loops. `rounded`: for bfloat16 weights on a CPU with
// AVX-512 BF16, the n inputs already rounded to bfloat16 (RoundedBatch's, made once per product input, see
// bfloat16_rows), else null.
template <typename W>
void rows_times(const Matrix& m, int64_t begin, int64_t end, const float* x, int64_t n, float* out, int64_t out_stride,
                const c10::BFloat16* rounded) {
  int64_t r = begin;
  auto one_input = [&](int64_t first, int64_t k) {  // rows [first, end) times input k alone
#ifdef __AVX512BF16__
    if constexpr (std::is_same_v<W, c10::BFloat16>)
      bfloat16_rows(m, first, end, rounded + k * m.cols, out + k * out_stride);
    else
#endif
      rows<W>(m, first, end, x + k * m.cols, out + k * out_stride);
  };
#ifdef __AVX512F__
  if (n >= 5) {  // eight inputs at a time, five to seven last, then one to four take the four-row loops below
    int64_t j = 0, left = end;
    for (; n - j >= 5; j += std::min<int64_t>(8, n - j)) {
      const void* inputs_rounded = rounded ? rounded + j * m.cols : nullptr;
      left = two_rows_times_all<W>(m, begin, end, x + j * m.cols, inputs_rounded, std::min<int64_t>(8, n - j),
                                   out + j * out_stride, out_stride);
    }
    if (left < end)  // one row left over: the one-input loops, for all
      for (int64_t k = 0; k < j; ++k) one_input(left, k);
    if (j == n) return;
    x += j * m.cols, out += j * out_stride, n -= j;
    if (rounded) rounded += j * m.cols;
  }
#ifdef __AVX512BF16__
  if constexpr (std::is_same_v<W, c10::BFloat16>) {
    for (; r + 4 <= end; r += 4) {
      four_rows_times_bf16_all(m, r, rounded, n, out, out_stride);
      if (m.bias)
        for (int64_t k = 0; k < n; ++k)
          for (int64_t q = r; q < r + 4; ++q) out[k * out_stride + q] += m.bias[q];
    }
  }
#endif
  for (; r + 4 <= end; r += 4) {
    four_rows_times_all<W>(m, r, x, n, out, out_stride);
    if (m.bias)
      for (int64_t k = 0; k < n; ++k)
        for (int64_t q = r; q < r + 4; ++q) out[k * out_stride + q] += m.bias[q];
  }
#else
  // Four bfloat16 rows at a time are widened to float32 once, into a block that stays in the L1 cache, and the
  // one-input loop multiplies it by every input: the one-input loops over each input would widen every weight n
  // times. Float weights are multiplied where they are.
  constexpr bool widened = !std::is_same_v<W, float>;
  std::vector<float> block(widened ? 4 * m.cols : 0);
  Matrix four = widened ? Matrix{block.data(), nullptr, nullptr, 4, m.cols, m.cols * int64_t(sizeof(float))} : m;
  for (; r + 4 <= end; r += 4) {
    if constexpr (widened) {
      for (int64_t k = 0; k < 4; ++k) {
        const W* w = static_cast<const W*>(m.data) + (r + k) * m.cols;
        float* row = block.data() + k * m.cols;
#pragma omp simd
        for (int64_t c = 0; c < m.cols; ++c) row[c] = as_float(w[c]);
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      float* o = out + j * out_stride + r;
      four_rows<float>(four, widened ? 0 : r, x + j * m.cols, o);
      if (m.bias)
        for (int64_t q = 0; q < 4; ++q) o[q] += m.bias[r + q];
    }
  }
#endif
  if (r < end)
    for (int64_t j = 0; j < n; ++j) one_input(r, j);
}

// Products of several inputs (a batch decoding one token each) with int8 or int4 weights: every block of weights
// that is loaded (and for int4 split into its nibbles) is multiplied by the steps of four inputs before the next,
// four rows x four inputs of sums in registers, where integer_rows per input loads and splits every block once per
// input. Each input is rounded once (Rounded). The int32 sums of every 64 steps, their scaling per block and the
// order of every float addition are integer_rows<W>'s, so each input's outputs are the ones integer_rows gives it,
// bit for bit: a batch decodes the tokens its sequences would decode alone (the int8 model's steps round their
// inputs, so a difference in the last bit of one product can change a later token). integer_rows' arithmetic and
// this are kept in step; tests/test_kernels_integer.py checks that they are equal.
//
// int8 weights are vpdpbusd's unsigned operand here, offset by 128 (one xor per 64 weights, for all inputs), where
// integer_rows gives each weight its input's sign (one instruction more per weight vector and input); each input's
// sums start from -128 times its steps' sums in fours, which takes the offset back out exactly. (AVX2's vpmaddubsw
// would saturate its int16 pairs at 255 x 127 x 2, so AVX2 builds take integer_rows per input.)
struct RoundedBatch {
  std::vector<const Rounded*> inputs;  // n rounded inputs, as Rounded::set<W> made them
  int64_t n = 0;
  int64_t per_input = 0;            // int8: offsets per input
  std::vector<c10::BFloat16> bfloat16;  // bfloat16 weights: the n inputs rounded to bfloat16, one after another
  std::vector<int32_t> offsets;     // int8 with AVX-512 VNNI: per input, per 64 steps, -128 x the 16 sums of 4 steps
  bool int8_too = false;            // an int4 stack that holds int8 matrices: offsets for those too
  // decode_prompt's products of kPromptTileRows inputs and more: its inputs for prompt_product's tiles (else null)
  struct PromptRows* prompt = nullptr;

  template <typename W>
  void set(const Rounded* rounded, int64_t count) {
    inputs.resize(count);
    for (int64_t j = 0; j < count; ++j) inputs[j] = rounded + j;
    arrange<W>();
  }

  // The inputs at these addresses (a mixture's rows that picked one expert).
  template <typename W>
  void set_each(const Rounded* const* rounded, int64_t count) {
    inputs.assign(rounded, rounded + count);
    arrange<W>();
  }

  template <typename W>
  void arrange() {
    n = static_cast<int64_t>(inputs.size());
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    if (n > 0 && (std::is_same_v<W, int8_t> || (std::is_same_v<W, Int4> && int8_too))) {
      per_input = inputs[0]->q.size() / 4;  // q holds a multiple of 64 steps
      offsets.resize(n * per_input);
      const __m512i ones = _mm512_set1_epi8(1);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < per_input * 4; i += 64) {
          __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, _mm512_loadu_si512(inputs[j]->q.data() + i));
          _mm512_storeu_si512(offsets.data() + j * per_input + i / 4, _mm512_mullo_epi32(sums, _mm512_set1_epi32(-128)));
        }
    }
#endif
  }
};

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
// Four int8 rows from `row` on times inputs [j0, j0 + N) of the batch: out[j * out_stride + row + r].
template <int N>
inline void int8_four_rows_times(const Matrix& m, int64_t row, const RoundedBatch& in, int64_t j0, float* out,
                                 int64_t out_stride) {
  const int64_t per_row = m.scales_per_row(), group = m.scale_group, whole = m.cols / 64 * 64;
  const int8_t* w[4];
  const float* ws[4];
  for (int r = 0; r < 4; ++r) w[r] = static_cast<const int8_t*>(m.data) + (row + r) * m.cols, ws[r] = m.scale + (row + r) * per_row;
  const __m512i sign_bit = _mm512_set1_epi8(-128);  // w xor 0x80 = w + 128 as an unsigned byte
  const __m512i scale_lanes = int8_scale_lanes(m);
  __m512 sums[N][4];
  for (auto& per_input : sums)
    for (auto& sum : per_input) sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < whole; i += 64) {
    __m512i weights[4];
    __m512 d[4];
    for (int r = 0; r < 4; ++r) {
      if (j0 == 0) prefetch(w[0] + kPrefetch + 4 * i + 64 * r);  // the four rows are one stream: see integer_rows
      weights[r] = _mm512_xor_si512(_mm512_loadu_si512(w[r] + i), sign_bit);
      d[r] = int8_scales(ws[r] + i / group, group, scale_lanes);
    }
    for (int j = 0; j < N; ++j) {
      const Rounded& x = *in.inputs[j0 + j];
      __m512i q = _mm512_loadu_si512(x.q.data() + i);
      __m512i start = _mm512_loadu_si512(in.offsets.data() + (j0 + j) * in.per_input + i / 4);
      __m512 scale = _mm512_loadu_ps(x.scales.data() + i / 4);
      for (int r = 0; r < 4; ++r) {
        __m512i dots = _mm512_dpbusd_epi32(start, weights[r], q);
        sums[j][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(d[r], scale), sums[j][r]);
      }
    }
  }
  if (j0 == 0)
    for (int64_t b = 4 * whole; b < 4 * m.cols; b += 64) prefetch(w[0] + kPrefetch + b);  // the columns past 64s
  for (int j = 0; j < N; ++j) {
    float* o = out + (j0 + j) * out_stride + row;
    _mm_storeu_ps(o, four_sums(sums[j]));
    for (int r = 0; r < 4; ++r) {
      if (whole < m.cols) o[r] += int8_dot(w[r], ws[r], group, *in.inputs[j0 + j], whole, m.cols);
      if (m.bias) o[r] += m.bias[row + r];
    }
  }
}

// Four int4 rows from `row` on times inputs [j0, j0 + N) of the batch: four groups (64 bytes) per step, then a pair
// of groups, then the scalar loops for one left over, each as integer_rows<Int4> takes them.
template <int N>
inline void int4_four_rows_times(const Matrix& m, int64_t row, const RoundedBatch& in, int64_t j0, float* out,
                                 int64_t out_stride) {
  const int64_t groups = m.cols / kGroup, quads = groups / 4 * 4, paired = groups / 2 * 2;
  const uint8_t* q[4];
  const c10::Half* dm[4];
  for (int r = 0; r < 4; ++r)
    q[r] = static_cast<const uint8_t*>(m.data) + (row + r) * m.row_bytes, dm[r] = m.pairs + (row + r) * groups * 2;
  const __m512i zero = _mm512_setzero_si512(), nibble = _mm512_set1_epi8(15);
  const __m512i first_d_then_second = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i each_d = _mm512_set_epi32(6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
  __m512 sums[N][4];
  __m256 minimums[N][4];  // the minimums' share: (d, m) pairs times the input's (0, s * sum(q)) pairs
  for (int j = 0; j < N; ++j)
    for (int r = 0; r < 4; ++r) sums[j][r] = _mm512_setzero_ps(), minimums[j][r] = _mm256_setzero_ps();
  const char* pairs_ahead = reinterpret_cast<const char*>(dm[0]) + kPrefetch / 4;  // as integer_rows<Int4>'s
  for (int64_t g = 0; g < quads; g += 4) {
    __m512i low[4], high[4];
    __m256 pairs[4];  // (d, m) of four groups
    for (int r = 0; r < 4; ++r) {
      if (j0 == 0) {
        prefetch(q[0] + kPrefetch + 64 * (g + r));
        if (r == 0) prefetch(pairs_ahead + 16 * g);
      }
      __m512i bytes = _mm512_loadu_si512(q[r] + g * 16);
      low[r] = _mm512_and_si512(bytes, nibble), high[r] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
      pairs[r] = four_pairs(dm[r] + 2 * g);
    }
    for (int j = 0; j < N; ++j) {
      const Rounded& x = *in.inputs[j0 + j];
      __m512i first_halves = _mm512_loadu_si512(x.quads.data() + g * kGroup);
      __m512i second_halves = _mm512_loadu_si512(x.quads.data() + g * kGroup + 64);
      __m512 scale = _mm512_loadu_ps(x.quad_scales.data() + g * 4);
      __m256 step_sums = _mm256_loadu_ps(x.pair_sums.data() + 2 * g);
      for (int r = 0; r < 4; ++r) {
        __m512i dots = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, low[r], first_halves), high[r], second_halves);
        __m512 d = _mm512_permutexvar_ps(each_d, _mm512_castps256_ps512(pairs[r]));
        sums[j][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(d, scale), sums[j][r]);
        minimums[j][r] = _mm256_fmadd_ps(pairs[r], step_sums, minimums[j][r]);
      }
    }
  }
  for (int64_t g = quads; g < paired; g += 2) {  // lanes as in integer_rows<Int4>'s pair of groups
    __m512i weights[4];
    __m128 pairs[4];
    if (j0 == 0) prefetch(pairs_ahead + 16 * g);
    for (int r = 0; r < 4; ++r) {
      if (j0 == 0 && r < 2) prefetch(q[0] + kPrefetch + 64 * (g + r));
      __m512i bytes = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[r] + g * 16)));
      __m512i doubled = _mm512_shuffle_i64x2(bytes, bytes, 0x50);
      weights[r] = _mm512_and_si512(_mm512_mask_srli_epi16(doubled, 0xFF00FF00, doubled, 4), nibble);
      pairs[r] = two_pairs(dm[r] + 2 * g);
    }
    for (int j = 0; j < N; ++j) {
      const Rounded& x = *in.inputs[j0 + j];
      __m512i steps = _mm512_loadu_si512(x.q.data() + g * kGroup);
      __m512 scale = _mm512_loadu_ps(x.scales.data() + g * 8);
      __m256 step_sums = _mm256_zextps128_ps256(_mm_loadu_ps(x.pair_sums.data() + 2 * g));
      for (int r = 0; r < 4; ++r) {
        minimums[j][r] = _mm256_fmadd_ps(_mm256_zextps128_ps256(pairs[r]), step_sums, minimums[j][r]);
        __m512i dots = _mm512_dpbusd_epi32(zero, weights[r], steps);
        __m512 d = _mm512_permutexvar_ps(first_d_then_second, _mm512_castps128_ps512(pairs[r]));
        sums[j][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(d, scale), sums[j][r]);
      }
    }
  }
  if (j0 == 0 && paired < groups) prefetch(q[0] + kPrefetch + 64 * paired), prefetch(pairs_ahead + 16 * paired);
  for (int j = 0; j < N; ++j) {
    const Rounded& x = *in.inputs[j0 + j];
    float* o = out + (j0 + j) * out_stride + row;
    for (int r = 0; r < 4; ++r) sums[j][r] = _mm512_add_ps(sums[j][r], _mm512_zextps256_ps512(minimums[j][r]));
    _mm_storeu_ps(o, four_sums(sums[j]));
    for (int r = 0; r < 4; ++r) {
      if (paired < groups) o[r] += int4_dot(q[r], dm[r], x, paired, groups) + minimums_share(dm[r], x, paired, groups);
      if (m.bias) o[r] += m.bias[row + r];
    }
  }
}

// Four rows times every input of the batch, N inputs at a time (four for int8; two for int4, whose minimums'
// sums take a register per row and input more).
template <typename W>
inline void four_rows_times_batch(const Matrix& m, int64_t row, const RoundedBatch& in, float* out, int64_t out_stride) {
  auto tile = [&](auto inputs, int64_t j0) {
    constexpr int N = decltype(inputs)::value;
    if constexpr (std::is_same_v<W, int8_t>) int8_four_rows_times<N>(m, row, in, j0, out, out_stride);
    else int4_four_rows_times<N>(m, row, in, j0, out, out_stride);
  };
  constexpr int most = std::is_same_v<W, int8_t> ? 4 : 2;
  int64_t j = 0;
  for (; j + most <= in.n; j += most) tile(std::integral_constant<int, most>{}, j);
  switch (in.n - j) {
    case 3: tile(std::integral_constant<int, 3>{}, j); break;
    case 2: tile(std::integral_constant<int, 2>{}, j); break;
    case 1: tile(std::integral_constant<int, 1>{}, j); break;
  }
}

// One register's 64 bytes in memory: a std::vector<__m512i> would drop the type's attributes (GCC warns).
struct alignas(64) Register {
  __m512i value;
};

// Sixteen registers of 16 4-byte lanes transposed: lane k of register r becomes lane r of register k.
inline void transpose_16x16(__m512i* r) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2)
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]), t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  for (int i = 0; i < 16; i += 4) {  // r[i + k]: per 128-bit part p, lane 4p + k of registers i to i + 3
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]), r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]), r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int k = 0; k < 4; ++k) {  // the 128-bit parts across the four groups of four registers
    __m512i low01 = _mm512_shuffle_i32x4(r[k], r[4 + k], 0x44), high01 = _mm512_shuffle_i32x4(r[k], r[4 + k], 0xEE);
    __m512i low23 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0x44);
    __m512i high23 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0xEE);
    t[k] = _mm512_shuffle_i32x4(low01, low23, 0x88), t[4 + k] = _mm512_shuffle_i32x4(low01, low23, 0xDD);
    t[8 + k] = _mm512_shuffle_i32x4(high01, high23, 0x88), t[12 + k] = _mm512_shuffle_i32x4(high01, high23, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Words [first, first + count) of 16 rows (count <= 16; row r at base + r * stride words, rows from `rows` on read
// as zeros) transposed into `words`: words[i] holds word first + i of every row, row r in lane r. The 16-row tiles'
// scales so, a float32 scale (or an int4 block's (d, m) float16 pair) per 4-byte word.
inline void rows_words_as_lanes(const void* base, int64_t stride, int64_t first, int64_t count, int64_t rows,
                                __m512i* words) {
  const int32_t* row_words = static_cast<const int32_t*>(base) + first;
  const __mmask16 valid = count >= 16 ? 0xFFFF : (1 << count) - 1;
  for (int r = 0; r < 16; ++r)
    words[r] = r < rows ? _mm512_maskz_loadu_epi32(valid, row_words + r * stride) : _mm512_setzero_si512();
  transpose_16x16(words);
}

// Lanes of int4 (d, m) float16 pairs as float32 registers: d is each lane's low half, m its high one.
inline __m512i pairs_d(__m512i pairs) { return _mm512_castps_si512(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(pairs))); }
inline __m512i pairs_m(__m512i pairs) { return pairs_d(_mm512_srli_epi32(pairs, 16)); }

// Sixteen rows' 16 sums each, one register per sum and a row per lane, added in four_sums' order: per 128-bit part
// p of four_sums' registers, (lane 4p + lane 4p + 2) + (lane 4p + 1 + lane 4p + 3), then parts (0 + 2) + (1 + 3).
inline __m512 sixteen_sums(const __m512* sums) {
  __m512 part[4];
  for (int p = 0; p < 4; ++p)
    part[p] = _mm512_add_ps(_mm512_add_ps(sums[4 * p], sums[4 * p + 2]),
                            _mm512_add_ps(sums[4 * p + 1], sums[4 * p + 3]));
  return _mm512_add_ps(_mm512_add_ps(part[0], part[2]), _mm512_add_ps(part[1], part[3]));
}

// The fewest inputs that take the sixteen-row tiles below; fewer take the four-row tiles, which transpose nothing
// (1536 x 576 and 576 x 1536 at 2-8 inputs: int4's break even at 3 inputs, int8's at 5-6).
template <typename W>
constexpr int64_t kSixteenRowInputs = std::is_same_v<W, Int4> ? 3 : 6;

// Sixteen int4 rows from `row` on times every input of the batch, the rows side by side as the 16 lanes of each
// register: where the four-row tile's lanes are the parts of one row (and every part's product is scaled, summed
// and reduced per row and input), here one vpdpbusd of a weight register with one 4-byte word of the input,
// broadcast, advances 16 rows at once, and each scaling and sum serves 16 rows (int4 batch-32 step ~2x faster). The
// rows' words are gathered into lanes once per tile, in `lanes`, and serve every input.
//
// Each input's outputs are integer_rows<Int4>'s bit for bit: its four-row loop keeps 16 sums per row, one per lane
// of its registers (the 4-byte word k of group g goes to lane 4 (g % 4) + k, a pair of groups left over puts the low
// and high nibbles of each word apart), and sums them in four_sums' order at the end. Here the 16 sums of a row are
// 16 registers, updated in that order with the same products, then added in that order across registers.
inline void int4_sixteen_rows_times(const Matrix& m, int64_t row, const RoundedBatch& in, float* out,
                                    int64_t out_stride) {
  const int64_t groups = m.cols / kGroup, quads = groups / 4 * 4, paired = groups / 2 * 2;
  constexpr int kPerGroup = 10;  // registers per group: the low nibbles of words 0-3, their high nibbles, d, m
  thread_local std::vector<Register> lanes;
  lanes.resize(std::max<int64_t>(paired, 1) * kPerGroup);
  const uint8_t* q = static_cast<const uint8_t*>(m.data) + row * m.row_bytes;
  const c10::Half* dm = m.pairs + row * groups * 2;
  const __m512i nibble = _mm512_set1_epi8(15), zero = _mm512_setzero_si512();
  __m512i words[16];
  for (int64_t g = 0; g < paired; g += 4) {  // four groups' 64 bytes of each row, their 4-byte words as lanes
    const int64_t count = std::min<int64_t>(4, paired - g);
    const __mmask16 valid = count == 4 ? 0xFFFF : (1 << (4 * count)) - 1;
    for (int r = 0; r < 16; ++r) words[r] = _mm512_maskz_loadu_epi32(valid, q + r * m.row_bytes + 16 * g);
    transpose_16x16(words);
    for (int64_t i = 0; i < count; ++i) {
      Register* at = lanes.data() + (g + i) * kPerGroup;
      for (int k = 0; k < 4; ++k) {
        at[k].value = _mm512_and_si512(words[4 * i + k], nibble);
        at[4 + k].value = _mm512_and_si512(_mm512_srli_epi16(words[4 * i + k], 4), nibble);
      }
    }
  }
  for (int64_t g = 0; g < paired; g += 16) {  // sixteen groups' (d, m) pairs of each row, a pair as a lane
    const int64_t count = std::min<int64_t>(16, paired - g);
    rows_words_as_lanes(dm, groups, g, count, 16, words);
    for (int64_t i = 0; i < count; ++i) {
      Register* at = lanes.data() + (g + i) * kPerGroup;
      at[8].value = pairs_d(words[i]), at[9].value = pairs_m(words[i]);
    }
  }
  // The next sixteen rows (most often this thread's next claim), a few lines per input: the products here are
  // bound by the multiply-adds, and gathering rows that are not in the cache would stall them.
  const char* next_rows = reinterpret_cast<const char*>(q + 16 * m.row_bytes);
  const char* next_pairs = reinterpret_cast<const char*>(dm + 16 * groups * 2);
  const int64_t row_lines = 16 * m.row_bytes / 64, lines = row_lines + 16 * groups * 4 / 64;
  const int64_t lines_per_input = (lines + in.n - 1) / in.n;
  for (int64_t j = 0; j < in.n; ++j) {
    for (int64_t line = j * lines_per_input; line < std::min(lines, (j + 1) * lines_per_input); ++line)
      prefetch_to_l2(line < row_lines ? next_rows + 64 * line : next_pairs + 64 * (line - row_lines));
    const Rounded& x = *in.inputs[j];
    const int8_t* steps = x.q.data();
    auto word = [&](int64_t at) { return _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(steps + at)); };
    auto fp = [](__m512i v) { return _mm512_castsi512_ps(v); };
    __m512 sums[16], minimums[4];  // minimums[i]: integer_rows' minimums lane 2 i + 1 (its even lanes stay zero)
    for (auto& sum : sums) sum = _mm512_setzero_ps();
    for (auto& sum : minimums) sum = _mm512_setzero_ps();
    for (int64_t g = 0; g < quads; g += 4) {
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const Register* at = lanes.data() + (g + i) * kPerGroup;
        const int64_t first = (g + i) * kGroup;
        __m512 scale = _mm512_mul_ps(fp(at[8].value), _mm512_set1_ps(x.scale(g + i)));
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          __m512i low = _mm512_dpbusd_epi32(zero, at[k].value, word(first + 4 * k));
          __m512i dots = _mm512_dpbusd_epi32(low, at[4 + k].value, word(first + 16 + 4 * k));
          sums[4 * i + k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), scale, sums[4 * i + k]);
        }
        minimums[i] = _mm512_fmadd_ps(fp(at[9].value), _mm512_set1_ps(x.pair_sums[2 * (g + i) + 1]), minimums[i]);
      }
    }
    if (quads < paired) {  // lanes 0-3: the first group's low nibbles, 4-7 its high ones, 8-15 the second group's
#pragma GCC unroll 2
      for (int i = 0; i < 2; ++i) {
        const Register* at = lanes.data() + (quads + i) * kPerGroup;
        const int64_t first = (quads + i) * kGroup;
        __m512 scale = _mm512_mul_ps(fp(at[8].value), _mm512_set1_ps(x.scale(quads + i)));
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          __m512i low = _mm512_dpbusd_epi32(zero, at[k].value, word(first + 4 * k));
          __m512i high = _mm512_dpbusd_epi32(zero, at[4 + k].value, word(first + 16 + 4 * k));
          sums[8 * i + k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(low), scale, sums[8 * i + k]);
          sums[8 * i + 4 + k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(high), scale, sums[8 * i + 4 + k]);
        }
        minimums[i] = _mm512_fmadd_ps(fp(at[9].value), _mm512_set1_ps(x.pair_sums[2 * (quads + i) + 1]), minimums[i]);
      }
    }
    for (int i = 0; i < 4; ++i) sums[2 * i + 1] = _mm512_add_ps(sums[2 * i + 1], minimums[i]);
    float* o = out + j * out_stride + row;
    _mm512_storeu_ps(o, sixteen_sums(sums));
    if (paired < groups || m.bias)
      for (int r = 0; r < 16; ++r) {
        if (paired < groups)
          o[r] += int4_dot(q + r * m.row_bytes, dm + r * groups * 2, x, paired, groups) +
                  minimums_share(dm + r * groups * 2, x, paired, groups);
        if (m.bias) o[r] += m.bias[row + r];
      }
  }
}

// Sixteen int8 rows from `row` on times every input of the batch, the rows as the lanes of each register, as
// int4_sixteen_rows_times takes int4 rows. integer_rows<int8_t>'s 16 sums per row are the 16 4-byte words of each 64
// columns (lanes 0-7 the first block's, 8-15 the second's); here they are 16 registers, each word's 4 products
// added to its input's offset as int8_four_rows_times adds them, then summed in four_sums' order. Scales is the
// number of weight scales per 64 columns: 2, or 4 with a scale per 16 weights.
template <int Scales>
inline void int8_sixteen_rows_times(const Matrix& m, int64_t row, const RoundedBatch& in, float* out,
                                    int64_t out_stride) {
  const int64_t per_row = m.scales_per_row(), whole = m.cols / 64 * 64, steps = whole / 64;
  constexpr int kPerStep = 16 + Scales;  // registers per 64 columns: the 16 words as unsigned bytes, their scales
  thread_local std::vector<Register> lanes;
  lanes.resize(std::max<int64_t>(steps, 1) * kPerStep);
  const int8_t* w = static_cast<const int8_t*>(m.data) + row * m.cols;
  const float* ws = m.scale + row * per_row;
  const __m512i sign_bit = _mm512_set1_epi8(-128);  // w xor 0x80 = w + 128 as an unsigned byte
  __m512i words[16];
  for (int64_t s = 0; s < steps; ++s) {
    for (int r = 0; r < 16; ++r) words[r] = _mm512_loadu_si512(w + r * m.cols + 64 * s);
    transpose_16x16(words);
    for (int k = 0; k < 16; ++k) lanes[s * kPerStep + k].value = _mm512_xor_si512(words[k], sign_bit);
  }
  for (int64_t b = 0; b < Scales * steps; b += 16) {  // sixteen scales of each row, a scale as a lane
    const int64_t count = std::min<int64_t>(16, Scales * steps - b);
    rows_words_as_lanes(ws, per_row, b, count, 16, words);
    for (int64_t i = 0; i < count; ++i) lanes[(b + i) / Scales * kPerStep + 16 + (b + i) % Scales].value = words[i];
  }
  const char* next_rows = reinterpret_cast<const char*>(w + 16 * m.cols);  // as int4_sixteen_rows_times'
  const char* next_scales = reinterpret_cast<const char*>(ws + 16 * per_row);
  const int64_t row_lines = 16 * m.cols / 64, lines = row_lines + 16 * per_row * 4 / 64;
  const int64_t lines_per_input = (lines + in.n - 1) / in.n;
  for (int64_t j = 0; j < in.n; ++j) {
    for (int64_t line = j * lines_per_input; line < std::min(lines, (j + 1) * lines_per_input); ++line)
      prefetch_to_l2(line < row_lines ? next_rows + 64 * line : next_scales + 64 * (line - row_lines));
    const Rounded& x = *in.inputs[j];
    const int8_t* q = x.q.data();
    const int32_t* offsets = in.offsets.data() + j * in.per_input;
    __m512 sums[16];
    for (auto& sum : sums) sum = _mm512_setzero_ps();
    for (int64_t s = 0; s < steps; ++s) {
      const Register* at = lanes.data() + s * kPerStep;
      __m512 scaled[Scales];  // weight scale times input scale: the input's two blocks of 32 span the Scales
      for (int p = 0; p < Scales; ++p)
        scaled[p] = _mm512_mul_ps(_mm512_castsi512_ps(at[16 + p].value), _mm512_set1_ps(x.scale(2 * s + 2 * p / Scales)));
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) {
        __m512i dots = _mm512_dpbusd_epi32(_mm512_set1_epi32(offsets[16 * s + k]), at[k].value,
                                           _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(q + 64 * s + 4 * k)));
        sums[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), scaled[k * Scales / 16], sums[k]);
      }
    }
    float* o = out + j * out_stride + row;
    _mm512_storeu_ps(o, sixteen_sums(sums));
    if (whole < m.cols || m.bias)
      for (int r = 0; r < 16; ++r) {
        if (whole < m.cols) o[r] += int8_dot(w + r * m.cols, ws + r * per_row, m.scale_group, x, whole, m.cols);
        if (m.bias) o[r] += m.bias[row + r];
      }
  }
}
#endif

// Rows [begin, end) of int8 or int4 weights times every input of the batch: out[j * out_stride + r] for input j,
// what integer_rows<W> writes for each input. Rows left over from fours, and CPUs without AVX-512 VNNI, take
// integer_rows per input (the block of rows in matvec stays in the cache from the first input's product on).
template <typename W>
void integer_rows_times(const Matrix& m, int64_t begin, int64_t end, const RoundedBatch& in, float* out,
                        int64_t out_stride) {
  int64_t r = begin;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if (in.n >= kSixteenRowInputs<W>)
    for (; r + 16 <= end; r += 16) {
      if constexpr (std::is_same_v<W, Int4>) int4_sixteen_rows_times(m, r, in, out, out_stride);
      else if (m.scale_group == 16) int8_sixteen_rows_times<4>(m, r, in, out, out_stride);
      else int8_sixteen_rows_times<2>(m, r, in, out, out_stride);
    }
  for (; r + 4 <= end; r += 4) four_rows_times_batch<W>(m, r, in, out, out_stride);
#endif
  if (r < end)
    for (int64_t j = 0; j < in.n; ++j) integer_rows<W>(m, r, end, *in.inputs[j], out + j * out_stride);
}

// A prompt's products with int8 or int4 weights (more rows than a batch decodes): each input rounded to int8 steps
// per block of 32, as every integer product here rounds it (Rounded), and multiplied by the stored steps with
// vpdpbusd, where unpacking the whole matrix to bfloat16 for PyTorch's matmul wrote and read it again for every
// call and left the products at bfloat16's rate, half of vpdpbusd's (64 products per instruction against
// vdpbf16ps's 32). Sixteen rows side by side are the 16 lanes of each register (as int8_sixteen_rows_times lays
// them out), two such registers times PromptInputs inputs at a time: each 4-byte word of an input, broadcast,
// advances 32 rows, and each block's int32 sums become floats once per block, where the decode's tiles keep every
// word's sum apart so that a batch's rows come out as their sequences' alone, bit for bit (a prompt's come out
// as the product of W with the rounded input, in another order of float sums).
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
constexpr int kPromptInputs = 6;  // inputs per tile: two rows' registers times six inputs hold 12 int32 and 12 float sums
// Inputs rounded and multiplied at a time: every tile of rows reads all of them, and a longer prompt's steps outgrow
// the caches (4096 rows x 11008 columns, 45 MB: 4096 x 11008 weights 652-656 -> 581-583 ms at two threads).
constexpr int64_t kPromptChunk = 512;

// Thirty-two rows of a matrix as vpdpbusd's unsigned operand: int8 weights offset by 128 (w xor 0x80), int4 steps as
// they are. words[2 w + h]: 4-byte word w (columns 4w to 4w + 3) of rows 16h to 16h + 15, a row per lane; scales
// per unit of columns (int8: its weight scales, per 32 or per 16 columns; int4: per block, d then m) the same way.
struct PromptLanes {
  std::vector<Register> words, scales;
  std::vector<uint8_t> rows;  // one half's 16 rows of unsigned steps, before they are turned into lanes
};

// Rows [row, row + 16) into half h of `lanes`; rows past the matrix's end multiply as zeros.
void pack_prompt_half(const Matrix& m, bool int4, int64_t row, int h, int64_t padded, PromptLanes& lanes) {
  const uint8_t zero = int4 ? 0 : 0x80;
  lanes.rows.resize(16 * padded);
  for (int r = 0; r < 16; ++r) {
    uint8_t* to = lanes.rows.data() + r * padded;
    int64_t filled = 0;
    if (row + r < m.rows && int4) {
      const uint8_t* q = static_cast<const uint8_t*>(m.data) + (row + r) * m.row_bytes;
      const __m128i nibble = _mm_set1_epi8(15);
      for (int64_t g = 0; g < m.cols / kGroup; ++g) {  // byte j: column j's step low, column j + 16's high
        __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * g));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(to + kGroup * g), _mm_and_si128(bytes, nibble));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(to + kGroup * g + 16), _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble));
      }
      filled = m.cols;
    } else if (row + r < m.rows) {
      const uint8_t* w = static_cast<const uint8_t*>(m.data) + (row + r) * m.cols;
#pragma omp simd
      for (int64_t c = 0; c < m.cols; ++c) to[c] = w[c] ^ 0x80;
      filled = m.cols;
    }
    std::fill(to + filled, to + padded, zero);
  }
  __m512i words[16];
  for (int64_t s = 0; s < padded / 64; ++s) {
    for (int r = 0; r < 16; ++r) words[r] = _mm512_loadu_si512(lanes.rows.data() + r * padded + 64 * s);
    transpose_16x16(words);
    for (int k = 0; k < 16; ++k) lanes.words[2 * (16 * s + k) + h].value = words[k];
  }
  // The scales, 16 units at a time: a row's are 4-byte words one after another (int4: a (d, m) float16 pair per
  // block; int8: a float32 scale per unit), so 16 rows' 16 units are a 16 x 16 block to transpose. Written one by
  // one into an array that was then loaded as a register, they stalled on each load (the 16 stores not forwarded
  // to it): 17% of a 16-token int4 prompt's time in decode_prompt.
  const int64_t units = int4 ? m.cols / kGroup : m.scales_per_row();
  const void* first_row = int4 ? static_cast<const void*>(m.pairs + row * units * 2) : m.scale + row * units;
  for (int64_t u = 0; u < units; u += 16) {
    const int64_t count = std::min<int64_t>(16, units - u);
    rows_words_as_lanes(first_row, units, u, count, m.rows - row, words);
    for (int64_t i = 0; i < count; ++i) {
      if (int4) {
        Register* pair = lanes.scales.data() + (2 * (u + i) + h) * 2;
        pair[0].value = pairs_d(words[i]), pair[1].value = pairs_m(words[i]);
      } else {
        lanes.scales[2 * (u + i) + h].value = words[i];
      }
    }
  }
}

// A prompt's inputs rounded (as Rounded rounds each), one after another: steps (n, padded), zero past the columns;
// scales (n, blocks); and per input and unit of columns (32, or 16 for int8 weights with a scale per 16): int8,
// -128 times the unit's steps' sum, where its dot products start, which takes the weights' offset back out; int4,
// the input's scale times the block's steps' sum (Rounded's pair_sums), which the rows' minimums multiply.
struct PromptInputs {
  int64_t n = 0, padded = 0, blocks = 0, units = 0;
  std::vector<int8_t> steps;
  std::vector<float> scales, shares;
  std::vector<int32_t> offsets;

  void round(const float* x, int64_t count, int64_t cols, bool int4, int64_t unit) {
    size(count, cols, int4, unit);
    at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) { round_rows(x, begin, end, cols, int4, unit); });
  }

  void size(int64_t count, int64_t cols, bool int4, int64_t unit) {
    n = count, blocks = (cols + kGroup - 1) / kGroup, padded = (blocks + 1) / 2 * 64, units = (cols + unit - 1) / unit;
    steps.assign(n * padded, 0);
    scales.resize(n * blocks);
    if (int4) shares.resize(n * units);
    else offsets.resize(n * units);
  }

  // Inputs [begin, end) of x (n, cols), once `size` has made room for them.
  void round_rows(const float* x, int64_t begin, int64_t end, int64_t cols, bool int4, int64_t unit) {
    for (int64_t j = begin; j < end; ++j)
      for (int64_t b = 0; b < blocks; ++b) {
        int32_t sums[2];
        float scale = round_block(x + j * cols + b * kGroup, std::min(kGroup, cols - b * kGroup),
                                  steps.data() + j * padded + b * kGroup, sums);
        scales[j * blocks + b] = scale;
        if (int4) shares[j * units + b] = scale * static_cast<float>(sums[0] + sums[1]);
        else if (unit == 16) {  // a last block of 16 columns or fewer is one unit
          offsets[j * units + 2 * b] = -128 * sums[0];
          if (2 * b + 1 < units) offsets[j * units + 2 * b + 1] = -128 * sums[1];
        } else {
          offsets[j * units + b] = -128 * (sums[0] + sums[1]);
        }
      }
  }
};

// Rows [row, row + 32) (those below `rows`) times N inputs from `first` on, into out (n, rows). UnitWords: 4-byte
// words per weight scale, 8 (a block of 32) or 4 (int8 with a scale per 16 columns).
template <bool Int4Weights, int UnitWords, int N>
inline void prompt_tile(const PromptLanes& lanes, const PromptInputs& in, int64_t first, int64_t row, int64_t rows,
                        float* out) {
  const int64_t units = in.units;
  const int8_t* steps = in.steps.data() + first * in.padded;
  const float* scales = in.scales.data() + first * in.blocks;
  __m512 sums[2][N];
  for (auto& half : sums)
    for (auto& sum : half) sum = _mm512_setzero_ps();
  for (int64_t u = 0; u < units; ++u) {
    __m512i dots[2][N];
    for (int j = 0; j < N; ++j)
      dots[0][j] = dots[1][j] = Int4Weights ? _mm512_setzero_si512() : _mm512_set1_epi32(in.offsets[(first + j) * units + u]);
    const Register* w = lanes.words.data() + 2 * UnitWords * u;
#pragma GCC unroll 8
    for (int k = 0; k < UnitWords; ++k) {
      const __m512i low = w[2 * k].value, high = w[2 * k + 1].value;
      for (int j = 0; j < N; ++j) {
        __m512i x = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(steps + j * in.padded + 4 * (UnitWords * u + k)));
        dots[0][j] = _mm512_dpbusd_epi32(dots[0][j], low, x);
        dots[1][j] = _mm512_dpbusd_epi32(dots[1][j], high, x);
      }
    }
    const int64_t block = u * UnitWords / 8;
    constexpr int per_unit = Int4Weights ? 2 : 1;
    for (int h = 0; h < 2; ++h) {
      const __m512 scale = _mm512_castsi512_ps(lanes.scales[(2 * u + h) * per_unit].value);
      for (int j = 0; j < N; ++j) {
        sums[h][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots[h][j]),
                                     _mm512_mul_ps(scale, _mm512_set1_ps(scales[j * in.blocks + block])), sums[h][j]);
        if constexpr (Int4Weights)  // the minimums' share: m times the input's scale times its steps' sum
          sums[h][j] = _mm512_fmadd_ps(_mm512_castsi512_ps(lanes.scales[(2 * u + h) * 2 + 1].value),
                                       _mm512_set1_ps(in.shares[(first + j) * units + u]), sums[h][j]);
      }
    }
  }
  for (int h = 0; h < 2; ++h) {
    const int64_t from = row + 16 * h;
    if (from >= rows) break;
    const __mmask16 valid = rows - from >= 16 ? 0xFFFF : (1 << (rows - from)) - 1;
    for (int j = 0; j < N; ++j) _mm512_mask_storeu_ps(out + (first + j) * rows + from, valid, sums[h][j]);
  }
}

template <bool Int4Weights, int UnitWords>
void prompt_product_rows(const PromptLanes& lanes, const PromptInputs& in, int64_t row, int64_t rows, float* out) {
  int64_t j = 0;
  for (; j + kPromptInputs <= in.n; j += kPromptInputs)
    prompt_tile<Int4Weights, UnitWords, kPromptInputs>(lanes, in, j, row, rows, out);
  switch (in.n - j) {
    case 5: prompt_tile<Int4Weights, UnitWords, 5>(lanes, in, j, row, rows, out); break;
    case 4: prompt_tile<Int4Weights, UnitWords, 4>(lanes, in, j, row, rows, out); break;
    case 3: prompt_tile<Int4Weights, UnitWords, 3>(lanes, in, j, row, rows, out); break;
    case 2: prompt_tile<Int4Weights, UnitWords, 2>(lanes, in, j, row, rows, out); break;
    case 1: prompt_tile<Int4Weights, UnitWords, 1>(lanes, in, j, row, rows, out); break;
  }
}

// Rows [row, row + 32) of m (those below m.rows) times every input, packed into `lanes` first.
void prompt_tiles(const Matrix& m, bool int4, int64_t unit, const PromptInputs& in, int64_t row, PromptLanes& lanes,
                  float* out) {
  lanes.words.resize(2 * in.padded / 4);
  lanes.scales.resize(2 * in.units * (int4 ? 2 : 1));
  for (int h = 0; h < 2; ++h) pack_prompt_half(m, int4, row + 16 * h, h, in.padded, lanes);
  if (int4) prompt_product_rows<true, 8>(lanes, in, row, m.rows, out);
  else if (unit == 16) prompt_product_rows<false, 4>(lanes, in, row, m.rows, out);
  else prompt_product_rows<false, 8>(lanes, in, row, m.rows, out);
}

// The fewest tokens of a prompt whose int8/int4 products in decode_prompt take prompt_product's tiles, as
// linear.PROMPT_PRODUCT_ROWS for a layer's: at 16 rows they take 0.73-0.75x the batch's time at int8, 0.86-0.96x at
// int4. Fewer take the batch's.
constexpr int64_t kPromptTileRows = 16;

// A prompt's inputs to one product in decode_prompt, rounded as prompt_product rounds them, by each thread for itself
// when a matrix first asks for its kind (int4; int8 with a scale per 32 or per 16 weights: an int4 stack holds int8
// matrices too): `set` names the inputs of the products that follow.
struct PromptRows {
  const float* x = nullptr;
  int64_t n = 0, cols = 0, generation = 0;
  PromptInputs kinds[3];
  int64_t rounded[3] = {-1, -1, -1};  // the generation each kind was rounded for
  PromptLanes lanes;

  void set(const float* inputs, int64_t count, int64_t columns) { x = inputs, n = count, cols = columns, ++generation; }

  const PromptInputs& of(bool int4, int64_t unit) {
    const int kind = int4 ? 0 : unit == 16 ? 2 : 1;
    if (rounded[kind] != generation) {
      kinds[kind].size(n, cols, int4, unit);
      kinds[kind].round_rows(x, 0, n, cols, int4, unit);
      rounded[kind] = generation;
    }
    return kinds[kind];
  }
};

// Rows [begin, end) of int8 or int4 weights (begin a multiple of 32; end too, or m.rows) times the prompt's inputs,
// out (n, m.rows).
void prompt_rows(const Matrix& m, int64_t begin, int64_t end, PromptRows& prompt, float* out) {
  const bool int4 = m.pairs != nullptr;  // an int4 stack's int8 matrices have scales, not pairs
  const int64_t unit = int4 ? kGroup : m.scale_group;
  const PromptInputs& in = prompt.of(int4, unit);
  for (int64_t row = begin; row < end; row += 32) prompt_tiles(m, int4, unit, in, row, prompt.lanes, out);
  if (m.bias)
    for (int64_t j = 0; j < in.n; ++j)
      for (int64_t r = begin; r < end; ++r) out[j * m.rows + r] += m.bias[r];
}
#else
// Builds without AVX-512 VNNI: decode_prompt's products are the batch's.
struct PromptRows {
  void set(const float*, int64_t, int64_t) {}
};
constexpr int64_t kPromptTileRows = std::numeric_limits<int64_t>::max();
void prompt_rows(const Matrix&, int64_t, int64_t, PromptRows&, float*) {}
#endif

// Whether prompt_product has its vector loops in this build (AVX-512 VNNI): without them it takes integer_rows per
// input, correct but slower than unpacking the weights for PyTorch's matmul, which kernels/linear.py keeps there.
bool prompt_product_vectorized() {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  return true;
#else
  return false;
#endif
}

// y = x W^T for x (n, cols) float32 and int8 or int4 weights, each x row rounded to int8 steps per block of 32: the
// quantized layers' products of a prompt (see above). The same product as matvec's, in another order of float sums.
at::Tensor prompt_product(at::Tensor x, at::Tensor weight, at::Tensor scale) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 2,
              "prompt_product: x must be a contiguous float32 matrix");
  TORCH_CHECK(weight.scalar_type() == at::kChar || weight.scalar_type() == at::kByte,
              "prompt_product: weights must be int8 or int4 (uint8), got ", weight.scalar_type());
  Matrix m = matrix(weight, scale, {});
  TORCH_CHECK(x.size(1) == m.cols, "prompt_product: x has ", x.size(1), " values per row for ", m.cols,
              " weight columns");
  const int64_t n = x.size(0);
  const bool int4 = weight.scalar_type() == at::kByte;
  at::Tensor y = at::empty({n, m.rows}, x.options());
  if (n == 0 || m.rows == 0) return y;
  const float* xd = x.data_ptr<float>();
  float* yd = y.data_ptr<float>();
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  const int64_t unit = int4 ? kGroup : m.scale_group;
  PromptInputs in;
  for (int64_t start = 0; start < n; start += kPromptChunk) {
    float* out = yd + start * m.rows;
    in.round(xd + start * m.cols, std::min(kPromptChunk, n - start), m.cols, int4, unit);
    at::parallel_for(0, (m.rows + 31) / 32, 1, [&](int64_t begin, int64_t end) {
      PromptLanes lanes;
      for (int64_t t = begin; t < end; ++t) prompt_tiles(m, int4, unit, in, 32 * t, lanes, out);
    });
  }
#else
  std::vector<Rounded> inputs(n);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) inputs[j].set<int8_t>(xd + j * m.cols, m.cols);
  });
  at::parallel_for(0, m.rows, 64, [&](int64_t begin, int64_t end) {  // each writes its rows [begin, end) of out
    for (int64_t j = 0; j < n; ++j) {
      if (int4) integer_rows<Int4>(m, begin, end, inputs[j], yd + j * m.rows);
      else integer_rows<int8_t>(m, begin, end, inputs[j], yd + j * m.rows);
    }
  });
#endif
  return y;
}

// ---- Causal attention of a prompt's queries (prefill) ----
//
// q (B, nh, T, hs) over k, v (B, n_kv, S, hs), S >= T: query t is position S - T + t and sees keys 0 .. S - T + t.
// Flash-style: each task takes kPromptRows query positions of one batch row for all the query heads sharing one
// key/value head, and walks the keys in blocks of kKeyBlock up to its last row's diagonal with an online softmax,
// so the key block is read once for the group's heads and the scores never leave the L1 cache. Within a block the
// scores are a small product: q's elements broadcast against the block's keys transposed (16 keys to a vector), then
// the probabilities broadcast against each key's values, in float32, or for bfloat16 with vdpbf16ps (two products a
// lane). A 512-token SmolLM2 prompt (9 query heads on 3 key/value heads of 64), one layer, one thread, CPU time
// on Zen 4: torch's CPU flash attention 8.1 ms bfloat16 (37 GFLOP/s), 7.5 float32; here 2.3 (130 GFLOP/s) and
// 3.8 (80 GFLOP/s, six rows at a time; one 512-bit FMA a cycle is its bound, 96 GFLOP/s in torch's float32
// matmul). What did not pay: blocks of 16 keys (as fast in float32, 9% slower for head_dim 128), widening bfloat16
// to float32 instead of vdpbf16ps (70 GFLOP/s), six rows at a time for bfloat16 (2.31-2.34 ms against 2.28-2.33),
// 64 positions a task (float32 head_dim 128: 28.4-28.9 -> 34.3-34.9 ms, bfloat16 no change).
constexpr int64_t kPromptRows = 32;  // query positions per task
constexpr int64_t kKeyBlock = 64;  // keys per block, 4 vectors

struct PromptTask {
  int64_t head_dim, rows, group;  // rows = query positions, group = query heads per key/value head
  float scale;
};

// Task `index` of `pairs` (batch row, key/value head) pairs times `blocks` blocks of kPromptRows positions: its pair
// and first position, in an order where any contiguous range of tasks mixes long ones (late positions) with short
// ones, as at::parallel_for and a team's claims give each thread one such range first.
inline std::pair<int64_t, int64_t> prompt_task_place(int64_t index, int64_t pairs, int64_t blocks) {
  int64_t turn = index / pairs, block = turn % 2 == 0 ? turn / 2 : blocks - 1 - turn / 2;
  return {index % pairs, block * kPromptRows};
}

// One task's state: its queries scaled (row r = head r / rows, position r % rows), its running max, sum and
// unnormalized outputs and one block's probabilities per row; the bfloat16 path's queries as given and
// probabilities rounded to bfloat16; and where the current key block lies in its packed layouts (PromptBlocks).
struct PromptScratch {
  std::vector<float> q, out, top, total, p;
  std::vector<uint16_t> q_pairs, p_pairs;
  const float* keys = nullptr;
  const uint32_t* key_pairs = nullptr;
  const uint16_t* value_pairs = nullptr;
  void size_for(int64_t rows, int64_t head_dim) {
    q.resize(rows * head_dim);
    q_pairs.resize(rows * head_dim);
    p_pairs.resize(rows * kKeyBlock);
    out.assign(rows * head_dim, 0.f);
    top.assign(rows, -INFINITY);
    total.assign(rows, 0.f);
    p.resize(rows * kKeyBlock);
  }
};

// Every key block of every (batch row, key/value head), packed once before the tasks, which read each block as many
// times as there are tasks at or after it (8 on average at 512 positions: packing in each task cost 12% of the
// bfloat16 kernel's time, 5-8% of float32's). float32: the keys transposed, (head_dim, 64 keys); bfloat16: the keys as pairs of
// elements, (head_dim / 2, 64 keys) of 2 each, and the values as pairs of keys, (32, head_dim) of 2 each, the
// operands of vdpbf16ps. A block past the last key is zeros.
struct PromptBlocks {
  std::vector<float> keys;
  std::vector<uint32_t> key_pairs;
  std::vector<uint16_t> value_pairs;
  int64_t per_head;  // blocks per (batch row, key/value head)
};

template <typename C>
void pack_key_block(PromptBlocks& packed, int64_t index, bool pairs, const C* keys, const C* values,
                    int64_t k_pos_stride, int64_t v_pos_stride, int64_t count, int64_t hd) {
  if (pairs) {
    uint32_t* key_pairs = packed.key_pairs.data() + index * hd / 2 * kKeyBlock;
    uint16_t* value_pairs = packed.value_pairs.data() + index * kKeyBlock * hd;
    const uint16_t* k = reinterpret_cast<const uint16_t*>(keys);
    const uint16_t* v = reinterpret_cast<const uint16_t*>(values);
    for (int64_t j = 0; j < kKeyBlock; ++j) {
      for (int64_t d = 0; d < hd / 2; ++d) {
        uint32_t key_pair = 0;
        if (j < count) std::memcpy(&key_pair, k + j * k_pos_stride + 2 * d, sizeof key_pair);
        key_pairs[d * kKeyBlock + j] = key_pair;
      }
      for (int64_t d = 0; d < hd; ++d) value_pairs[((j / 2) * hd + d) * 2 + j % 2] = j < count ? v[j * v_pos_stride + d] : 0;
    }
  } else {
    float* transposed = packed.keys.data() + index * hd * kKeyBlock;
    for (int64_t j = 0; j < kKeyBlock; ++j)
      for (int64_t d = 0; d < hd; ++d) transposed[d * kKeyBlock + j] = j < count ? as_float(keys[j * k_pos_stride + d]) : 0.f;
  }
}

// Rows [r, r + N) of the task against the first 16 * K keys of the key block (transposed in s.keys), where row i
// may see `visible[i]` of them (1 to 16 * K; rows that see none are not passed): scores, the online softmax's
// update, and the probabilities times the values added to the rows' outputs.
#ifdef __AVX512F__
// One row's online-softmax update over a key block: its 16 * K scores, of which the first `visible` count, against
// the running max `top` and `total`, into probabilities p (0 past `visible`). Returns the factor the row's outputs so
// far are scaled by: 0 at the first block (top was -inf), 1 while the max holds (most blocks past the first few:
// no exp to take).
template <int K>
inline float softmax_block(const __m512 (&score)[K], int64_t visible, float& top, float& total, __m512 (&p)[K]) {
  __mmask16 kept[K];
  __m512 running = _mm512_set1_ps(top);
  for (int c = 0; c < K; ++c) {
    int64_t left = std::clamp<int64_t>(visible - 16 * c, 0, 16);
    kept[c] = static_cast<__mmask16>((1u << left) - 1);
    running = _mm512_mask_max_ps(running, kept[c], running, score[c]);
  }
  float row_top = _mm512_reduce_max_ps(running);
  float alpha = row_top == top ? 1.f : std::exp(top - row_top);
  __m512 sum = _mm512_setzero_ps();
  for (int c = 0; c < K; ++c) {
    p[c] = _mm512_maskz_mov_ps(kept[c], exp16(_mm512_sub_ps(score[c], _mm512_set1_ps(row_top))));
    sum = _mm512_add_ps(sum, p[c]);
  }
  total = total * alpha + _mm512_reduce_add_ps(sum);
  top = row_top;
  return alpha;
}

template <typename C, int D, int N, int K>
inline void prompt_rows(PromptScratch& s, int64_t r, const int64_t* visible, const C* values, int64_t pos_stride) {
  constexpr int64_t head_dim = 16 * D;
  __m512 score[N][K];
  for (auto& row : score)
    for (auto& v : row) v = _mm512_setzero_ps();
  const float* q = s.q.data() + r * head_dim;
  for (int64_t d = 0; d < head_dim; ++d) {
    __m512 k[K];
    for (int c = 0; c < K; ++c) k[c] = _mm512_loadu_ps(s.keys + d * kKeyBlock + 16 * c);
    for (int i = 0; i < N; ++i) {
      __m512 qd = _mm512_set1_ps(q[i * head_dim + d]);
      for (int c = 0; c < K; ++c) score[i][c] = _mm512_fmadd_ps(qd, k[c], score[i][c]);
    }
  }
  float alpha[N];
  int64_t seen = 0;
  for (int i = 0; i < N; ++i) {
    __m512 p[K];
    alpha[i] = softmax_block<K>(score[i], visible[i], s.top[r + i], s.total[r + i], p);
    for (int c = 0; c < K; ++c) _mm512_storeu_ps(s.p.data() + i * kKeyBlock + 16 * c, p[c]);
    seen = std::max(seen, visible[i]);
  }
  __m512 acc[N][D];
  float* out = s.out.data() + r * head_dim;
  for (int i = 0; i < N; ++i)
    for (int d = 0; d < D; ++d) acc[i][d] = _mm512_mul_ps(_mm512_set1_ps(alpha[i]), _mm512_loadu_ps(out + i * head_dim + 16 * d));
  for (int64_t j = 0; j < seen; ++j) {
    __m512 v[D];
    for (int d = 0; d < D; ++d) v[d] = load16(values + j * pos_stride + 16 * d);
    for (int i = 0; i < N; ++i) {
      __m512 p = _mm512_set1_ps(s.p[i * kKeyBlock + j]);
      for (int d = 0; d < D; ++d) acc[i][d] = _mm512_fmadd_ps(p, v[d], acc[i][d]);
    }
  }
  for (int i = 0; i < N; ++i)
    for (int d = 0; d < D; ++d) _mm512_storeu_ps(out + i * head_dim + 16 * d, acc[i][d]);
}

// prompt_rows with as many vectors of keys as the N rows see (the last of them sees the most): on the diagonal,
// the keys past it are not scored.
template <typename C, int D, int N>
inline void prompt_rows(PromptScratch& s, int64_t r, const int64_t* visible, const C* values, int64_t pos_stride) {
  switch ((visible[N - 1] + 15) / 16) {
    case 1: return prompt_rows<C, D, N, 1>(s, r, visible, values, pos_stride);
    case 2: return prompt_rows<C, D, N, 2>(s, r, visible, values, pos_stride);
    case 3: return prompt_rows<C, D, N, 3>(s, r, visible, values, pos_stride);
    default: return prompt_rows<C, D, N, 4>(s, r, visible, values, pos_stride);
  }
}
#endif

#ifdef __AVX512BF16__
// prompt_rows for bfloat16 with vdpbf16ps, two products a lane: the scores from the queries and keys as given (their
// products are exact in float32) and the probabilities rounded to bfloat16 (as torch's flash attention rounds them)
// times the values, float32 sums. The exponentials' total stays float32 and unrounded, as torch's does.
template <int D, int N, int K>
inline void prompt_rows_bf16(PromptScratch& s, int64_t r, const int64_t* visible, float scale) {
  constexpr int64_t head_dim = 16 * D;
  __m512 score[N][K];
  for (auto& row : score)
    for (auto& v : row) v = _mm512_setzero_ps();
  const uint32_t* q = reinterpret_cast<const uint32_t*>(s.q_pairs.data() + r * head_dim);
  for (int64_t d = 0; d < head_dim / 2; ++d) {
    __m512bh k[K];
    for (int c = 0; c < K; ++c) k[c] = (__m512bh)_mm512_loadu_si512(s.key_pairs + d * kKeyBlock + 16 * c);
    for (int i = 0; i < N; ++i) {
      __m512bh qd = (__m512bh)_mm512_set1_epi32(q[i * head_dim / 2 + d]);
      for (int c = 0; c < K; ++c) score[i][c] = _mm512_dpbf16_ps(score[i][c], qd, k[c]);
    }
  }
  float alpha[N];
  int64_t seen = 0;
  for (int i = 0; i < N; ++i) {
    for (int c = 0; c < K; ++c) score[i][c] = _mm512_mul_ps(score[i][c], _mm512_set1_ps(scale));
    __m512 p[K];
    alpha[i] = softmax_block<K>(score[i], visible[i], s.top[r + i], s.total[r + i], p);
    for (int c = 0; c < K; c += 2) {  // an odd last vector pairs with zeros
      __m512 next = c + 1 < K ? p[c + 1] : _mm512_setzero_ps();
      _mm512_storeu_si512(s.p_pairs.data() + i * kKeyBlock + 16 * c, (__m512i)_mm512_cvtne2ps_pbh(next, p[c]));
    }
    seen = std::max(seen, visible[i]);
  }
  __m512 acc[N][D];
  float* out = s.out.data() + r * head_dim;
  for (int i = 0; i < N; ++i)
    for (int d = 0; d < D; ++d) acc[i][d] = _mm512_mul_ps(_mm512_set1_ps(alpha[i]), _mm512_loadu_ps(out + i * head_dim + 16 * d));
  const uint32_t* p = reinterpret_cast<const uint32_t*>(s.p_pairs.data());
  for (int64_t j = 0; j < (seen + 1) / 2; ++j) {  // an odd last key's pair has a probability of 0
    __m512bh v[D];
    for (int d = 0; d < D; ++d) v[d] = (__m512bh)_mm512_loadu_si512(s.value_pairs + (j * head_dim + 16 * d) * 2);
    for (int i = 0; i < N; ++i) {
      __m512bh pj = (__m512bh)_mm512_set1_epi32(p[i * kKeyBlock / 2 + j]);
      for (int d = 0; d < D; ++d) acc[i][d] = _mm512_dpbf16_ps(acc[i][d], pj, v[d]);
    }
  }
  for (int i = 0; i < N; ++i)
    for (int d = 0; d < D; ++d) _mm512_storeu_ps(out + i * head_dim + 16 * d, acc[i][d]);
}

template <int D, int N>
inline void prompt_rows_bf16(PromptScratch& s, int64_t r, const int64_t* visible, float scale) {
  switch ((visible[N - 1] + 15) / 16) {
    case 1: return prompt_rows_bf16<D, N, 1>(s, r, visible, scale);
    case 2: return prompt_rows_bf16<D, N, 2>(s, r, visible, scale);
    case 3: return prompt_rows_bf16<D, N, 3>(s, r, visible, scale);
    default: return prompt_rows_bf16<D, N, 4>(s, r, visible, scale);
  }
}
#endif

// prompt_rows for one row in plain loops (any head_dim; the CPUs without AVX-512).
template <typename C>
void prompt_row(PromptScratch& s, int64_t r, int64_t head_dim, int64_t visible, const C* values, int64_t pos_stride) {
  float score[kKeyBlock] = {};  // the plain loops score the whole block
  const float* q = s.q.data() + r * head_dim;
  for (int64_t d = 0; d < head_dim; ++d)
#pragma omp simd
    for (int64_t j = 0; j < kKeyBlock; ++j) score[j] += q[d] * s.keys[d * kKeyBlock + j];
  float top = s.top[r];
  for (int64_t j = 0; j < visible; ++j) top = std::max(top, score[j]);
  float alpha = std::exp(s.top[r] - top), total = 0.f;
  for (int64_t j = 0; j < visible; ++j) total += score[j] = std::exp(score[j] - top);
  s.top[r] = top;
  s.total[r] = s.total[r] * alpha + total;
  float* out = s.out.data() + r * head_dim;
#pragma omp simd
  for (int64_t d = 0; d < head_dim; ++d) out[d] *= alpha;
  for (int64_t j = 0; j < visible; ++j) {
    const C* v = values + j * pos_stride;
#pragma omp simd
    for (int64_t d = 0; d < head_dim; ++d) out[d] += score[j] * as_float(v[d]);
  }
}

// Whether bfloat16 takes prompt_rows_bf16.
template <typename C>
bool prompt_pairs(int64_t head_dim) {
#ifdef __AVX512BF16__
  if constexpr (std::is_same_v<C, c10::BFloat16>) return head_dim == 64 || head_dim == 128;
#endif
  return false;
}

// One task: positions [t0, t0 + rows) of the `group` query heads at q (head_stride apart) over their key/value head,
// whose key blocks are packed from `block` on.
template <typename C>
void prompt_task(const PromptTask& task, PromptScratch& s, const C* q, int64_t q_head_stride, int64_t q_pos_stride,
                 const PromptBlocks& packed, int64_t block, const C* values, int64_t v_pos_stride, int64_t offset,
                 int64_t t0, C* out, int64_t out_head_stride, int64_t out_pos_stride) {
  const int64_t hd = task.head_dim, rows = task.rows, all = task.group * rows;
  s.size_for(all, hd);
  const bool pairs = prompt_pairs<C>(hd);
  for (int64_t r = 0; r < all; ++r) {
    const C* from = q + (r / rows) * q_head_stride + (t0 + r % rows) * q_pos_stride;
    if (pairs)
      std::memcpy(s.q_pairs.data() + r * hd, from, hd * sizeof(C));
    else
      for (int64_t d = 0; d < hd; ++d) s.q[r * hd + d] = as_float(from[d]) * task.scale;
  }
  const int64_t last = offset + t0 + rows - 1;  // the last key the task's last position sees
  int64_t visible[kPromptRows];
  for (int64_t first = 0; first <= last; first += kKeyBlock) {
    int64_t count = std::min(kKeyBlock, last + 1 - first), index = block + first / kKeyBlock;
    if (pairs) {
      s.key_pairs = packed.key_pairs.data() + index * hd / 2 * kKeyBlock;
      s.value_pairs = packed.value_pairs.data() + index * kKeyBlock * hd;
    } else {
      s.keys = packed.keys.data() + index * hd * kKeyBlock;
    }
    // Row i's position sees keys up to offset + t0 + i: all of a block behind its diagonal, part of one on it.
    for (int64_t i = 0; i < rows; ++i) visible[i] = std::clamp<int64_t>(offset + t0 + i - first + 1, 0, count);
    const C* block_values = values + first * v_pos_stride;
    for (int64_t h = 0; h < task.group; ++h) {
      int64_t i = 0;
      while (i < rows && visible[i] == 0) ++i;  // rows before the block's diagonal see none of it
#ifdef __AVX512F__
      auto run = [&](auto dims, auto n) {
        constexpr int D = decltype(dims)::value, N = decltype(n)::value;
        for (; i + N <= rows; i += N) prompt_rows<C, D, N>(s, h * rows + i, visible + i, block_values, v_pos_stride);
      };
      using std::integral_constant;
#ifdef __AVX512BF16__
      if (pairs) {
        auto run_pairs = [&](auto dims, auto n) {
          constexpr int D = decltype(dims)::value, N = decltype(n)::value;
          for (; i + N <= rows; i += N) prompt_rows_bf16<D, N>(s, h * rows + i, visible + i, task.scale);
        };
        if (hd == 64) {
          run_pairs(integral_constant<int, 4>{}, integral_constant<int, 4>{});
          run_pairs(integral_constant<int, 4>{}, integral_constant<int, 1>{});
        } else {
          run_pairs(integral_constant<int, 8>{}, integral_constant<int, 2>{});
          run_pairs(integral_constant<int, 8>{}, integral_constant<int, 1>{});
        }
      }
#endif
      if (hd == 64) {  // six rows: float32 4.3-4.4 -> 3.8 ms a SmolLM2 layer, as above
        run(integral_constant<int, 4>{}, integral_constant<int, 6>{});
        run(integral_constant<int, 4>{}, integral_constant<int, 4>{});
        run(integral_constant<int, 4>{}, integral_constant<int, 1>{});
      } else if (hd == 128) {
        run(integral_constant<int, 8>{}, integral_constant<int, 2>{});
        run(integral_constant<int, 8>{}, integral_constant<int, 1>{});
      }
#endif
      for (; i < rows; ++i) prompt_row(s, h * rows + i, hd, visible[i], block_values, v_pos_stride);
    }
  }
  for (int64_t r = 0; r < all; ++r) {
    C* to = out + (r / rows) * out_head_stride + (t0 + r % rows) * out_pos_stride;
    float inverse = 1.f / s.total[r];
    for (int64_t d = 0; d < hd; ++d) to[d] = static_cast<C>(s.out[r * hd + d] * inverse);
  }
}


// Whether prompt_attention has vector loops for heads of head_dim in this build: without them (a build for a CPU
// without AVX-512) its plain loops run at about half of torch's SDPA (a SmolLM2 layer's 512 positions, two threads:
// 8.2 ms for x86-64-v3, 9.7 for x86-64, against SDPA's 4.0), so models/layers.py keeps SDPA there.
bool prompt_attention_vectorized(int64_t head_dim) {
#ifdef __AVX512F__
  return head_dim == 64 || head_dim == 128;
#else
  return false;
#endif
}

// The batched step's attention for prompts without padding (decode_prompt's rows, `span` positions of each of
// `sequences` sequences after `pos` cached ones; a float32 cache, heads of 64 or 128 in a build with their vector
// loops): prompt_attention's work on the step's buffers. Each (sequence, key/value head)'s keys are packed into
// `packed` once by the team, then the team takes its tasks, kPromptRows positions of a group's query heads each,
// from q (rows of q_row values: row j's heads, scaled and rotated as attend_group takes them) into out (rows of
// out_row). attend_group reads a row's keys one at a time for each position: O(T^2) dot products, each summed across
// its lanes, which took a quarter of a 256-token int8 prompt's time in the step.
constexpr int64_t kBlockedSpan = 32;  // the fewest positions of each prompt that attend_in_blocks takes

void attend_in_blocks(Team& team, const float* q, int64_t q_row, float* out, int64_t out_row, const float* keys,
                      const float* values, int64_t row_stride, int64_t head_stride, int64_t pos_stride,
                      int64_t sequences, int64_t span, int64_t pos, int64_t n_kv, int64_t group, int64_t head_dim,
                      PromptBlocks& packed, PromptScratch& scratch) {
  const int64_t slots = pos + span, per_head = (slots + kKeyBlock - 1) / kKeyBlock, pairs = sequences * n_kv;
  packed.per_head = per_head;
  team.claim(pairs * per_head, 1, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      int64_t pair = index / per_head, first = index % per_head * kKeyBlock;
      int64_t at = pair / n_kv * row_stride + pair % n_kv * head_stride + first * pos_stride;
      pack_key_block(packed, index, false, keys + at, values + at, pos_stride, pos_stride,
                     std::min(kKeyBlock, slots - first), head_dim);
    }
  });
  team.wait();
  const int64_t row_blocks = (span + kPromptRows - 1) / kPromptRows;
  const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  team.claim(pairs * row_blocks, 1, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task_index = begin; task_index < end; ++task_index) {
      auto [pair, t0] = prompt_task_place(task_index, pairs, row_blocks);
      int64_t b = pair / n_kv, kv = pair % n_kv;
      PromptTask task{head_dim, std::min(kPromptRows, span - t0), group, scale};
      prompt_task(task, scratch, q + b * span * q_row + kv * group * head_dim, head_dim, q_row, packed,
                  pair * per_head, values + b * row_stride + kv * head_stride, pos_stride, pos, t0,
                  out + b * span * out_row + kv * group * head_dim, head_dim, out_row);
    }
  });
}

// The batched decoding step: one token for each of n sequences that share one cache, as generate's batch and the
// server's running rows do, the whole layer stack in one call. The plain forward spends as long on its ~40
// dispatched operations per layer, the mask over the padded cache and the separate attention as the products
// themselves take at 8 rows; here each product reads its weights once for all n inputs (rows_times), the rest
// runs in place on buffers of a few kilobytes per sequence.

// Rows [begin, end) of W times n inputs x (n, m.cols) into out (n, m.rows): float weights through rows_times (each
// weight loaded once for up to eight inputs), int8 and int4 through integer_rows_times on the inputs' rounded steps.
template <typename W>
void batch_rows(const Matrix& m, int64_t begin, int64_t end, const float* x, const RoundedBatch& rounded, int64_t n,
                float* out) {
  if constexpr (kInteger<W>) {
    if (rounded.prompt) return prompt_rows(m, begin, end, *rounded.prompt, out);
  }
  if constexpr (std::is_same_v<W, Int4>) {
    if (!m.pairs) return integer_rows_times<int8_t>(m, begin, end, rounded, out, m.rows);  // see product_rows
  }
  if constexpr (kInteger<W>) integer_rows_times<W>(m, begin, end, rounded, out, m.rows);
  else rows_times<W>(m, begin, end, x, n, out, m.rows, rounded.bfloat16.empty() ? nullptr : rounded.bfloat16.data());
}

// The multiple of rows that a batch's products claim: sixteen where the sixteen-row tiles take them, so that the
// smaller chunks at the end of a thread's share leave no rows to the four-row tiles (3% of an int4 batch-32 step).
template <typename W>
constexpr int64_t claimed_rows_multiple(int64_t n) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  if constexpr (kInteger<W>) return n >= kSixteenRowInputs<W> ? 16 : 4;
#endif
  return 4;
}

// The claimed loops of batch_layer_step: q, k, v, the keys' heads (or OLMo 2's whole q/k norms), the attention (and
// a prompt's key blocks and attention tasks, attend_in_blocks), o, then gate/up and down, or a mixture's router,
// gate, up, down and sum (and its shared expert's gate/up and down).
constexpr int64_t kBatchLoopsPerLayer = 15;

// A thread's picks for a batch's sparse layer (batch_mixture_step), and their inputs grouped by expert: the rows'
// (row, slot) pairs are placed in the order of the experts they picked, each expert's pairs (rows in order) a group.
struct MixtureGroups {
  std::vector<int64_t> chosen, position;  // per pair (row * top_k + slot): its expert, and its place in the groups
  std::vector<float> weights;             // per pair: its expert's weight
  std::vector<int64_t> start, expert;     // per group: its first place (and the end after the last), its expert
  std::vector<Matrix> gate, up, down;     // per group, its expert's
  std::vector<float> gathered;            // float32 weights: the groups' inputs, a row per place
  std::vector<float> activated;           // SiLU(gate) * up, a row per place
  std::vector<Rounded> rounded;           // integer weights: the activated rows rounded
  std::vector<const Rounded*> inputs;     // integer weights: per place, its rounded input of the gate and up
  std::vector<RoundedBatch> gate_inputs, down_inputs;  // per group
};

// batch_layer_step's sparse feed-forward part for n rows, `inputs` their normed inputs (n, hidden), as set_inputs
// rounded them (`rounded` for integer weights, `batch` for bfloat16 ones): the router's scores for every row (its
// rows claimed), every row's picks made alike by every thread (route), and each expert some row picked multiplied
// once for all of its rows, as a batch's matrix is: its gate and up rows claimed as one product over the groups,
// then its down rows, and each row's weighted sum of its experts' outputs added to x. Mixtral's 8 experts read once
// for a batch of 32 rows, where each row alone would read 2 of them. An expert that is not the step's sets
// `unusable`, as in mixture_step.
template <typename W>
void batch_mixture_step(Team& team, float* x, int64_t n, const Mixture& M, int64_t hidden, const float* inputs,
                        const Family& F, Shared& S, std::vector<Rounded>& rounded, const RoundedBatch& batch,
                        MixtureGroups& G, std::atomic<bool>& unusable) {
  const int64_t k = M.top_k, width = M.width, experts = M.experts, pairs = n * k;
  team.claim(scored_rows(M), kChunk, 4, [&](int64_t begin, int64_t end) {
    for (int64_t j = 0; j < n; ++j)
      router_scores(M, begin, end, inputs + j * hidden, S.router.data() + j * experts, S.shared_factors.data() + j);
  });
  team.wait();
  G.chosen.resize(pairs), G.weights.resize(pairs), G.position.resize(pairs);
  for (int64_t j = 0; j < n; ++j) route(S.router.data() + j * experts, M, &G.chosen[j * k], &G.weights[j * k]);
  std::vector<int64_t> next(experts, 0);  // first each expert's count of pairs, then its next free place
  for (int64_t p = 0; p < pairs; ++p) ++next[G.chosen[p]];
  G.start.clear(), G.expert.clear();
  for (int64_t e = 0, place = 0; e < experts; ++e) {
    if (!next[e]) continue;
    G.expert.push_back(e), G.start.push_back(place);
    place += next[e];
    next[e] = G.start.back();
  }
  G.start.push_back(pairs);
  for (int64_t p = 0; p < pairs; ++p) G.position[p] = next[G.chosen[p]]++;
  const int64_t groups = static_cast<int64_t>(G.expert.size());
  std::vector<int64_t> row_at(pairs);  // the row whose pair has each place
  for (int64_t p = 0; p < pairs; ++p) row_at[G.position[p]] = p / k;

  bool usable = true;
  G.gate.resize(groups), G.up.resize(groups), G.down.resize(groups);
  for (int64_t u = 0; u < groups && usable; ++u)
    usable = expert_matrices<W>(M, G.expert[u], hidden, G.gate[u], G.up[u], G.down[u]);
  if (!usable) unusable.store(true, std::memory_order_relaxed);
  G.gate_inputs.resize(groups), G.down_inputs.resize(groups);
  // Each group's inputs as batch_rows takes a batch's: float32 rows one after another, bfloat16 ones rounded so, or
  // the rows' rounded inputs.
  auto arrange = [&](std::vector<RoundedBatch>& batches, const float* rows, int64_t cols) {
    for (int64_t u = 0; u < groups; ++u) {
      RoundedBatch& group = batches[u];
      group.int8_too = batch.int8_too;
      int64_t first = G.start[u], count = G.start[u + 1] - first;
      if constexpr (kInteger<W>) group.set_each<W>(G.inputs.data() + first, count);
#ifdef __AVX512BF16__
      if constexpr (std::is_same_v<W, c10::BFloat16>)
        round_to_bfloat16(rows + first * cols, count * cols, group.bfloat16);
#endif
    }
  };
  if constexpr (kInteger<W>) {
    G.inputs.resize(pairs);
    for (int64_t q = 0; q < pairs; ++q) G.inputs[q] = &rounded[row_at[q]];
  }
  if constexpr (!kInteger<W>) {
    G.gathered.resize(pairs * hidden);
    for (int64_t q = 0; q < pairs; ++q)
      std::copy_n(inputs + row_at[q] * hidden, hidden, G.gathered.begin() + q * hidden);
  }
  arrange(G.gate_inputs, G.gathered.data(), hidden);
  // Rows [begin, end) of every group's product stacked (each `count` rows) times the group's inputs (`cols` each).
  auto grouped = [&](const std::vector<Matrix>& matrices, int64_t count, const float* rows, int64_t cols,
                     const std::vector<RoundedBatch>& batches, float* out) {
    team.claim(groups * count, M.in_major ? kInMajorChunk : kChunk, 4, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin / count; usable && begin < end; u = begin / count) {
        int64_t stop = std::min(end, (u + 1) * count), first = G.start[u];
        const Matrix& m = matrices[u];
        int64_t inputs = G.start[u + 1] - first;
        if (!m.in_major) {
          batch_rows<W>(m, begin - u * count, stop - u * count, rows + first * cols, batches[u], inputs,
                        out + first * count);
        } else if constexpr (!kInteger<W>) {  // an input at a time (gpt-oss's float experts)
          for (int64_t q = 0; q < inputs; ++q)
            in_major_rows<W>(m, begin - u * count, stop - u * count, rows + (first + q) * cols,
                             out + (first + q) * count);
        }
        begin = stop;
      }
    });
  };
  grouped(G.gate, M.paired_gate_up ? 2 * width : width, G.gathered.data(), hidden, G.gate_inputs, S.gate.data());
  if (!M.paired_gate_up) grouped(G.up, width, G.gathered.data(), hidden, G.gate_inputs, S.up.data());
  team.wait();
  G.activated.resize(pairs * width);
  activate_experts(F, M, S.gate.data(), S.up.data(), G.activated.data(), pairs * width);
  if constexpr (kInteger<W>) {
    G.rounded.resize(pairs);
    for (int64_t q = 0; q < pairs; ++q) {
      G.rounded[q].set<W>(G.activated.data() + q * width, width);
      G.inputs[q] = &G.rounded[q];
    }
  }
  arrange(G.down_inputs, G.activated.data(), width);
  grouped(G.down, hidden, G.activated.data(), width, G.down_inputs, S.mixed.data());
  team.wait();
  team.claim(hidden, kChunk, 4, [&](int64_t begin, int64_t end) {  // as mixture_step sums one row's
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = begin; i < end; ++i) {
        float sum = 0.f;
        for (int64_t s = 0; s < k; ++s) sum += G.weights[j * k + s] * S.mixed[G.position[j * k + s] * hidden + i];
        x[j * hidden + i] += sum * F.residual_factor;
      }
  });
}

// layer_step for n rows: x (n, hidden), `span` consecutive rows a sequence's tokens at positions pos to pos + span - 1
// (one per sequence decoding a token, decode_batch; a prompt's, decode_prompt): row j in the cache's row j / span at
// position pos + j % span, attending to the positions up to its own. Row j's rotary cos/sin at cos + j *
// F.rotary_dims; its sequence's attention mask over cache slots [0, pos + span) at mask + (j / span) * (pos + span)
// (null: no padding), a row that it leaves no position (a prompt's padding) attending to none: zeros, as the layers'
// attention gives it. Buffers in S hold n rows each. With sandwich norms, as in layer_step: x is the thread's own
// copy, the MLP's outputs are left in S.out.
template <typename W, typename C>
void batch_layer_step(Team& team, float* x, int64_t n, int64_t span, const Layer& L, const Family& F, Shared& S,
                      float eps, int64_t pos, const float* cos, const float* sin, const uint8_t* mask,
                      std::vector<float>& normed, std::vector<Rounded>& rounded, RoundedBatch& batch,
                      std::vector<float>& scores, MixtureGroups& groups, std::atomic<bool>& unusable,
                      PromptBlocks* packed, PromptScratch& scratch) {
  const bool sandwich = L.attn_out_norm.data != nullptr;
  int64_t hidden = L.o.rows, n_kv = L.keys.size(1), head_dim = L.keys.size(3), n_head = L.q.rows / head_dim;
  int64_t row_stride = L.keys.stride(0), head_stride = L.keys.stride(1), pos_stride = L.keys.stride(2);
  C* keys = L.keys.data_ptr<C>();
  C* values = L.values.data_ptr<C>();
  // The inputs rounded as the weights take them, by every thread: a prompt's for prompt_product's tiles (where
  // batch.prompt is set) when a product first asks, but a mixture's experts take each row's Rounded.
  auto set_inputs = [&](const float* inputs, int64_t cols, bool experts = false) {
    if constexpr (kInteger<W>) {
      if (batch.prompt) batch.prompt->set(inputs, n, cols);
      if (!batch.prompt || experts) {
        for (int64_t j = 0; j < n; ++j) rounded[j].set<W>(inputs + j * cols, cols);
        batch.set<W>(rounded.data(), n);
      }
    }
#ifdef __AVX512BF16__
    if constexpr (std::is_same_v<W, c10::BFloat16>) round_to_bfloat16(inputs, n * cols, batch.bfloat16);
#endif
  };
  // prompt_product's tiles take 32 rows at a time
  const int64_t multiple = batch.prompt ? 32 : claimed_rows_multiple<W>(n), chunk = std::max(kChunk, multiple);
  auto product = [&](const Matrix& m, const float* inputs, float* out) {
    team.claim(m.rows, chunk, multiple,
               [&](int64_t begin, int64_t end) { batch_rows<W>(m, begin, end, inputs, batch, n, out); });
  };

  const float* attention_input = L.attn_norm.data ? normed.data() : x;  // (OLMo 2 norms no layer input)
  if (L.attn_norm.data)
    for (int64_t j = 0; j < n; ++j) apply_norm(x + j * hidden, L.attn_norm, eps, normed.data() + j * hidden, hidden);
  set_inputs(attention_input, hidden);
  if (L.qkv_per_head) {
    product(L.qkv, attention_input, S.qkv.data());
  } else {
    product(L.q, attention_input, S.q.data());
    product(L.k, attention_input, S.k.data());
    product(L.v, attention_input, S.v.data());
  }
  team.prefetch_share(L.o, multiple);
  team.wait();
  // Parallel branches: the MLP's input normed now, as in layer_step (every thread its own, from x as it came in).
  if (F.parallel && L.mlp_norm.data != L.attn_norm.data)
    for (int64_t j = 0; j < n; ++j) apply_norm(x + j * hidden, L.mlp_norm, eps, normed.data() + j * hidden, hidden);
  auto cache_head = [&](int64_t j, int64_t h) {  // row j's key (normed, rotated) and value of head h, into the cache
    if (L.qkv_per_head) {  // key/value head h's queries (qkv_group of them), key and value taken apart
      for (int64_t i = 0; i < L.qkv_group + 2; ++i) {
        const int part = i < L.qkv_group ? 0 : static_cast<int>(i - L.qkv_group + 1);
        const int64_t head = part == 0 ? h * L.qkv_group + i : h;
        float* to = (part == 0 ? S.q.data() + j * L.q.rows : part == 1 ? S.k.data() + j * L.k.rows
                                                                       : S.v.data() + j * L.v.rows) + head * head_dim;
        const float* made = qkv_part(L, S.qkv.data() + j * L.qkv.rows, head, part, head_dim);
        std::copy(made, made + head_dim, to);
      }
    }
    float* k = S.k.data() + j * L.k.rows + h * head_dim;
    const float* v = S.v.data() + j * L.v.rows + h * head_dim;
    place_head(L, F, k, L.k_norm, eps, head_dim, cos + j * F.rotary_dims, sin + j * F.rotary_dims, h);
    int64_t slot = j / span * row_stride + h * head_stride + (pos + j % span) * pos_stride;
    for (int64_t i = 0; i < head_dim; ++i) {
      keys[slot + i] = static_cast<C>(k[i]);
      values[slot + i] = static_cast<C>(clipped(F, v[i]));
    }
  };
  if (L.whole_qk_norms) {
    team.claim(n, 1, 1, [&](int64_t begin, int64_t end) {  // OLMo 2: a row's queries and keys normed whole
      for (int64_t j = begin; j < end; ++j) {
        apply_norm(S.q.data() + j * L.q.rows, L.q_norm, eps, S.q.data() + j * L.q.rows, L.q.rows);
        apply_norm(S.k.data() + j * L.k.rows, L.k_norm, eps, S.k.data() + j * L.k.rows, L.k.rows);
        for (int64_t h = 0; h < n_kv; ++h) cache_head(j, h);
      }
    });
  } else {
    team.claim(n * n_kv, 1, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        cache_head(t / n_kv, t % n_kv);
      }
    });
  }
  team.wait();
  const int64_t group = n_head / n_kv;
  // A prompt's rows attend in blocks (attend_in_blocks) where `packed` is given (a float32 cache, no padding) and
  // this layer sees every earlier position (no window short of them, no soft-cap, no ALiBi).
  const bool in_blocks = std::is_same_v<C, float> && packed && (L.window == 0 || L.window >= pos + span) &&
                         F.attention_cap == 0.f && F.alibi.slopes.empty() && !L.sinks &&
                         prompt_attention_vectorized(head_dim);
  team.claim(n * n_kv, 1, 1, [&](int64_t begin, int64_t end) {  // a row's query heads of one key/value head
    for (int64_t t = begin; t < end; ++t) {
      int64_t j = t / n_kv, g = t % n_kv, last = pos + j % span;
      int64_t first = L.window > 0 ? std::max(last - L.window + 1, int64_t(0)) : 0;
      const uint8_t* allowed = mask ? mask + j / span * (pos + span) : nullptr;
      float* attended = S.attended.data() + j * L.o.cols + g * group * head_dim;
      int64_t kv = j / span * row_stride + g * head_stride;
      if (allowed && std::none_of(allowed + first, allowed + last + 1, [](uint8_t a) { return a != 0; })) {
        std::fill(attended, attended + head_dim, 0.f);
        if (F.padding_averages && !L.sinks) {  // (with a sink, the sink takes all of its share: zeros)
          for (int64_t t = 0; t < pos + span; ++t)
            for (int64_t i = 0; i < head_dim; ++i) attended[i] += as_float(values[kv + t * pos_stride + i]);
          for (int64_t i = 0; i < head_dim; ++i) attended[i] /= static_cast<float>(pos + span);
        }
        for (int64_t h = 1; h < group; ++h) std::copy(attended, attended + head_dim, attended + h * head_dim);
        continue;
      }
      float* q = S.q.data() + j * L.q.rows + g * group * head_dim;
      for (int64_t h = 0; h < group; ++h) {
        place_head(L, F, q + h * head_dim, L.q_norm, eps, head_dim, cos + j * F.rotary_dims, sin + j * F.rotary_dims,
                   g * group + h);
        scale_query(F, L, q + h * head_dim, head_dim);
      }
      if (!in_blocks)
        attend_group<C>(q, group, keys + kv, values + kv, pos_stride, head_dim, first, last, scores, attended, allowed,
                        F.attention_cap, &F.alibi, g * group, L.sinks ? L.sinks + g * group : nullptr);
    }
  });
  if constexpr (std::is_same_v<C, float>) {
    if (in_blocks) {
      team.wait();
      attend_in_blocks(team, S.q.data(), L.q.rows, S.attended.data(), L.o.cols, keys, values, row_stride, head_stride,
                       pos_stride, n / span, span, pos, n_kv, group, head_dim, *packed, scratch);
    }
  }
  team.wait();
  set_inputs(S.attended.data(), L.o.cols);
  team.claim(hidden, chunk, multiple, [&](int64_t begin, int64_t end) {
    batch_rows<W>(L.o, begin, end, S.attended.data(), batch, n, S.out.data());
    if (!sandwich)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = begin; i < end; ++i) x[j * hidden + i] += S.out[j * hidden + i] * F.residual_factor;
  });
  if (L.gate.data) team.prefetch_share(L.gate, multiple);
  team.prefetch_share(L.up, multiple);
  team.wait();
  if (sandwich)
    for (int64_t j = 0; j < n; ++j)
      add_normed(x + j * hidden, S.out.data() + j * hidden, L.attn_out_norm, eps, normed.data() + j * hidden, hidden);

  const float* mlp_input = L.mlp_norm.data ? normed.data() : x;
  if (L.mlp_norm.data && !F.parallel)
    for (int64_t j = 0; j < n; ++j) apply_norm(x + j * hidden, L.mlp_norm, eps, normed.data() + j * hidden, hidden);
  set_inputs(mlp_input, hidden, L.mixture.experts > 0);
  if (L.mixture.experts) {
    batch_mixture_step<W>(team, x, n, L.mixture, hidden, mlp_input, F, S, rounded, batch, groups, unusable);
    if (!L.up.data) return;
    // The shared expert, on the inputs set above, as in layer_step.
  }
  int64_t inner = L.up.rows;
  team.claim(inner, chunk, multiple, [&](int64_t begin, int64_t end) {
    if (L.gate.data) batch_rows<W>(L.gate, begin, end, mlp_input, batch, n, S.gate.data());
    batch_rows<W>(L.up, begin, end, mlp_input, batch, n, S.up.data());
    for (int64_t j = 0; j < n; ++j) {  // into gate's buffer; without a gate (StarCoder2), the activated up alone
      float *gate = S.gate.data() + j * inner + begin, *up = S.up.data() + j * inner + begin;
      if (L.gate.data) activate_times(F, L.xielu, gate, up, gate, end - begin);
      else activate(F, L.xielu, up, gate, end - begin);
    }
  });
  team.prefetch_share(L.down, multiple);
  team.wait();
  set_inputs(S.gate.data(), inner);  // SiLU(gate) * up, in place of gate
  team.claim(hidden, chunk, multiple, [&](int64_t begin, int64_t end) {
    batch_rows<W>(L.down, begin, end, S.gate.data(), batch, n, S.out.data());
    if (!sandwich)
      for (int64_t j = 0; j < n; ++j) {
        const float factor =
            L.mixture.shared_gate.data ? S.shared_factors[j] * F.residual_factor : F.residual_factor;
        for (int64_t i = begin; i < end; ++i) x[j * hidden + i] += S.out[j * hidden + i] * factor;
      }
  });
}

// decode_batch's and decode_prompt's work: x's rows, `span` tokens of each sequence from position pos on
// (batch_layer_step); a sequence's mask (mask's row) covers its cache slots up to its last token's.
void batch_stack(const char* op, at::Tensor x, int64_t span, const c10::intrusive_ptr<StepWeights>& stack,
                 at::TensorList keys, at::TensorList values, int64_t pos, int64_t window, at::Tensor cos,
                 at::Tensor sin, at::Tensor mask, bool padding_averages, double eps, c10::optional<at::Tensor> norm,
                 bool follow_team, c10::optional<at::Tensor> local_cos, c10::optional<at::Tensor> local_sin) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 2 && x.size(0) > 0, op,
              ": x must be a contiguous (rows, hidden) float32 matrix");
  int64_t n = x.size(0), sequences = n / span, slots = pos + span;  // slots: a sequence's cache slots after the call
  std::vector<at::Tensor> converted;
  at::ScalarType weight_type;
  std::vector<Layer> layers = step_layers(op, sequences, *stack, keys, values, slots - 1, window, converted,
                                          weight_type);
  Family family = stack->family();
  family.padding_averages = padding_averages;
  const Layer& first = layers[0];
  TORCH_CHECK(x.size(1) == first.o.rows, op, ": x has ", x.size(1), " values per row for a hidden size of ",
              first.o.rows);
  const int64_t width = family.rotary_dims = rotary_width(op, cos, -1, n, first.keys.size(3));
  at::Tensor cos_f = cos.to(at::kFloat).contiguous(), sin_f = sin.to(at::kFloat).contiguous();
  TORCH_CHECK(sin_f.numel() == n * width, op, ": cos and sin must be (rows, ", width,
              "), one position per row");
  TORCH_CHECK(local_cos.has_value() == local_sin.has_value(), op, ": give local_cos and local_sin together");
  at::Tensor local_cos_f = cos_f, local_sin_f = sin_f;
  if (local_cos && local_cos->defined()) {
    local_cos_f = local_cos->to(at::kFloat).contiguous(), local_sin_f = local_sin->to(at::kFloat).contiguous();
    TORCH_CHECK(local_cos_f.numel() == n * width && local_sin_f.numel() == n * width,
                op, ": local_cos and local_sin must be (rows, ", width, "), as cos, one position per row");
  }
  const uint8_t* allowed = nullptr;
  at::Tensor mask_bytes;
  if (mask.numel() > 0) {
    mask_bytes = mask.to(at::kByte).contiguous();
    TORCH_CHECK(mask_bytes.dim() == 2 && mask_bytes.size(0) == sequences && mask_bytes.size(1) == slots, op,
                ": mask must be (sequences, cached and new positions) = (", sequences, ", ", slots, "), got ",
                mask.sizes());
    allowed = mask_bytes.data_ptr<uint8_t>();
  }
  const std::pair<int64_t, int64_t> sizes = mlp_buffer_sizes(layers);  // per row
  const int64_t mlp_rows = sizes.first, most_experts = sizes.second;
  Shared S{std::vector<float>(n * first.q.rows), std::vector<float>(n * first.k.rows),
           std::vector<float>(n * first.v.rows), std::vector<float>(n * first.o.cols),
           std::vector<float>(n * first.o.rows), std::vector<float>(n * mlp_rows),
           std::vector<float>(n * mlp_rows), std::vector<float>(n * most_experts),
           std::vector<float>(most_experts ? n * stack->top_k * first.o.rows : 0), std::vector<float>(n)};
  if (first.qkv_per_head) S.qkv.resize(n * first.qkv.rows);
  std::atomic<bool> unusable{false};  // as decode_step's
  const float *c = cos_f.data_ptr<float>(), *s = sin_f.data_ptr<float>();
  const float *local_c = local_cos_f.data_ptr<float>(), *local_s = local_sin_f.data_ptr<float>();
  float* xd = x.data_ptr<float>();
  float epsf = static_cast<float>(eps);
  bool bf16_cache = keys[0].scalar_type() == at::kBFloat16;
  size_t n_layers = layers.size();
  const int64_t hidden = first.o.rows;
  NormWeights norm_f = final_norm_weights(op, norm, hidden, *stack, converted);
  bool int8_too = weight_type == at::kByte &&
                  (stack->int8_experts || std::any_of(stack->weights.begin(), stack->weights.end(), is_int8));
  // The key blocks of prompts that attend in blocks (batch_layer_step, attend_in_blocks), sized for the widest layer.
  PromptBlocks packed;
  const bool in_blocks = span >= kBlockedSpan && !allowed && !bf16_cache;
  if (in_blocks) {
    int64_t most = 0;
    for (const Layer& L : layers) most = std::max(most, L.keys.size(1) * L.keys.size(3));
    packed.keys.resize(sequences * most * ((slots + kKeyBlock - 1) / kKeyBlock) * kKeyBlock);
  }

  auto run = [&](auto weight_tag) {
    using W = decltype(weight_tag);
    in_team(kBatchLoopsPerLayer * n_layers + 1, [&](Team& team) {  // and the sandwich norms' copy of x
      std::vector<float> normed(n * first.o.rows), scores;
      std::vector<Rounded> rounded(n);
      RoundedBatch batch;
      batch.int8_too = int8_too;
      PromptScratch scratch;
      PromptRows prompt;
      if (kInteger<W> && span > 1 && n >= kPromptTileRows) batch.prompt = &prompt;
      MixtureGroups groups;
      std::vector<float> own_x(stack->sandwich ? n * hidden : 0);  // as decode_step's
      std::copy(xd, xd + own_x.size(), own_x.begin());
      float* rows_x = stack->sandwich ? own_x.data() : xd;
      for (size_t l = 0; l < n_layers; ++l) {
        const Layer& L = layers[l];
        const float *lc = L.local ? local_c : c, *ls = L.local ? local_s : s;
        auto step = [&](auto cache_tag) {
          batch_layer_step<W, decltype(cache_tag)>(team, rows_x, n, span, L, family, S, epsf, pos, lc, ls, allowed,
                                                   normed, rounded, batch, scores, groups, unusable,
                                                   in_blocks ? &packed : nullptr, scratch);
        };
        if (bf16_cache) step(c10::BFloat16{});
        else step(float{});
        if (l + 1 < n_layers) {
          team.prefetch_share(layers[l + 1].q);
          team.prefetch_share(layers[l + 1].k);
          team.prefetch_share(layers[l + 1].v);
        }
        if (l + 1 < n_layers || stack->sandwich) team.wait();
        if (stack->sandwich)
          for (int64_t j = 0; j < n; ++j)
            add_normed(rows_x + j * hidden, S.out.data() + j * hidden, L.mlp_out_norm, epsf, normed.data() + j * hidden,
                       hidden);
      }
      if (stack->sandwich)  // one of the threads still in the team hands its copy back
        team.claim(1, 1, 1, [&](int64_t, int64_t) { std::copy(own_x.begin(), own_x.end(), xd); });
    });
  };
  with_layout(weight_type, op, run);
  check_experts_usable(op, unusable, weight_type);
  if (norm_f.data)
    for (int64_t j = 0; j < n; ++j) apply_norm(xd + j * hidden, norm_f, epsf, xd + j * hidden, hidden);
  if (follow_team) follow_team_size();
}


// decode_step for n sequences at once: x (n, hidden) float32 in place; caches (n, n_kv, capacity, head_dim), this
// token's keys and values written at slot `pos` of every row; cos and sin (n, width), each row's own position
// (left-padded rows count theirs from their first real token; width: head_dim, or fewer where only a head's
// leading dimensions turn, see Family::rotary_dims); mask (n, pos + 1) uint8, each row's attention mask over the
// cache slots (0: padding, never attended), or empty for no padding. With `norm`,
// each row of x leaves normed by the final norm, as decode_step's x. local_cos and local_sin (rows, width): the
// sliding layers' angles (Layer::local), where the family has them.
void decode_batch(at::Tensor x, const c10::intrusive_ptr<StepWeights>& stack, at::TensorList keys,
                  at::TensorList values, int64_t pos, int64_t window,
                  at::Tensor cos, at::Tensor sin, at::Tensor mask, double eps, c10::optional<at::Tensor> norm,
                  bool follow_team, c10::optional<at::Tensor> local_cos, c10::optional<at::Tensor> local_sin) {
  batch_stack("decode_batch", x, 1, stack, keys, values, pos, window, cos, sin, mask, false, eps, norm, follow_team,
              local_cos, local_sin);
}

// The prompts of the caches' B sequences, T tokens each, through the layers in one call, as decode_batch steps
// sequences: x (B * T, hidden) float32 in place, sequence b's tokens at rows b * T to b * T + T - 1 and positions pos
// to pos + T - 1, whose keys and values are written there in the caches (B, n_kv, capacity, head_dim); a row attends
// to its sequence's positions up to its own (within the window on sliding layers), those the sequence's mask (B, pos
// + T) allows where it is given (left padding); a padding row, which its mask leaves no position, attends to none
// (zeros), or with `padding_averages` to all of its sequence's evenly, as the layers' sdpa or eager attention
// gives it. cos and sin (B * T, width): each row's angles. Short prompts are
// dominated by the plain forward's ~40 dispatched operations a layer, and their products by PyTorch's matmul on a few
// rows (SmolLM2, 16 tokens, two threads: 65 ms float32 and 31 bfloat16 a forward, of which the products 47 and 18).
void decode_prompt(at::Tensor x, const c10::intrusive_ptr<StepWeights>& stack, at::TensorList keys,
                   at::TensorList values, int64_t pos, int64_t window, at::Tensor cos, at::Tensor sin, at::Tensor mask,
                   bool padding_averages, double eps, c10::optional<at::Tensor> norm, bool follow_team,
                   c10::optional<at::Tensor> local_cos, c10::optional<at::Tensor> local_sin) {
  TORCH_CHECK(!keys.empty() && keys[0].dim() == 4 && keys[0].size(0) > 0, "decode_prompt: keys must hold each layer's "
              "(sequences, n_kv, capacity, head_dim) cache");
  const int64_t sequences = keys[0].size(0);
  TORCH_CHECK(x.dim() == 2 && x.size(0) > 0 && x.size(0) % sequences == 0, "decode_prompt: x must be (sequences * "
              "tokens, hidden), the same number of tokens for each of the caches' ", sequences, " sequences, got ",
              x.sizes());
  batch_stack("decode_prompt", x, x.size(0) / sequences, stack, keys, values, pos, window, cos, sin, mask,
              padding_averages, eps, norm, follow_team, local_cos, local_sin);
}

// y = x W^T for a few rows x (n, cols) float32: the language-model head of a decoding step that did not run it
// (n = 1; decode_step runs it otherwise) or of a batch's, and the quantized layers' products for a few rows (a batch
// decoding one token each), which would otherwise widen every weight to a float matrix first. Rows of W are taken
// in blocks small enough to stay in the core's cache while every x row uses them, so the weights are read from
// memory once.
at::Tensor matvec(at::Tensor x, at::Tensor weight, c10::optional<at::Tensor> scale) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() <= 2,
              "matvec: x must be a contiguous float32 vector or matrix");
  Matrix m = matrix(weight, scale, {});
  int64_t n = x.dim() == 2 ? x.size(0) : 1;
  TORCH_CHECK(x.size(-1) == m.cols, "matvec: x has ", x.size(-1), " values per row for ", m.cols, " weight columns");
  at::Tensor y = x.dim() == 2 ? at::empty({n, m.rows}, x.options()) : at::empty({m.rows}, x.options());
  const float* xd = x.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  auto run = [&](auto weight_tag) {
    using W = decltype(weight_tag);
    std::vector<Rounded> inputs(n);  // each input rounded once, before the threads share the rows
    for (int64_t j = 0; j < n; ++j) inputs[j].set<W>(xd + j * m.cols, m.cols);
    if (n == 1)  // the one-input loops (bfloat16's take vdpbf16ps), the rows claimed by a team as in a step
      return in_team(1, [&](Team& team) { team.product<W>(m, inputs[0], yd); });
    RoundedBatch batch;
    if constexpr (kInteger<W>) batch.set<W>(inputs.data(), n);
#ifdef __AVX512BF16__
    if constexpr (std::is_same_v<W, c10::BFloat16>) round_to_bfloat16(xd, n * m.cols, batch.bfloat16);
#endif
    constexpr int64_t block = 64;  // rows: at most 64 x 4 KB of float32 weights, well inside the L2 cache
    at::parallel_for(0, (m.rows + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        int64_t first = b * block, last = std::min(first + block, m.rows);
        if constexpr (kInteger<W>) {
          integer_rows_times<W>(m, first, last, batch, yd, m.rows);
        } else {
          rows_times<W>(m, first, last, xd, n, yd, m.rows, batch.bfloat16.empty() ? nullptr : batch.bfloat16.data());
        }
      }
    });
  };
  with_layout(weight.scalar_type(), "matvec", run);
  return y;
}

// The matrix of int8 or int4 weights (scales applied) written into `out`, float32 or bfloat16, in one pass on
// every thread: for products of many rows (a prompt, training), which then run as one matmul in the model's
// dtype. Each weight is computed in float32 and rounded once, so a bfloat16 matrix equals the float32 one
// converted; writing it directly skips the float32 matrix, twice the bytes, and the conversion's second pass.
// float32 to bfloat16 as c10::BFloat16 rounds it (to nearest, ties to even; NaN to the quiet NaN), in integer
// operations that the compiler vectorizes: the constructor, called per value, ran at a third of the speed.
inline uint16_t bfloat16_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  uint16_t rounded = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
  return value != value ? uint16_t(0x7FC0) : rounded;
}

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
// Row r of int4 weights as bfloat16, a group of 32 at a time: its 16 possible values (minimum + step * scale for
// steps 0..15, each one fused multiply-add, as the compiler contracts unpack_int4_row's loop, so the values are
// the same) rounded by vcvtneps2bf16 into a table, and the 32 nibbles, widened to 16 bits, looking their values
// up in it with one vpermw: half the instructions of converting and rounding all 32 weights, and 1.2-1.3x faster
// (one core, CPU time, 11008 x 4096 into a matrix in the caches). That instruction flushes subnormals to zero and
// gives NaNs their own payload where c10::BFloat16 keeps both: a group with such a value rounds its table with
// bfloat16_bits, so the matrix stays the same. `stream`: the 64 bytes of each group go straight to memory
// (non-temporal stores, 64-byte aligned rows) instead of first reading every line of the matrix into the cache
// to write it: for a matrix too large to stay in the cache until its product reads it, half the time of the
// unpacking (11008 x 4096: 7.3 -> 4.5 ms beside a 55 ms product of 128 rows).
void unpack_int4_row_bfloat16(const Matrix& m, int64_t r, uint16_t* row, bool stream) {
  int64_t groups = m.cols / kGroup;
  const uint8_t* q = static_cast<const uint8_t*>(m.data) + r * m.row_bytes;
  const c10::Half* dm = m.pairs + r * groups * 2;
  const __m128i nibble = _mm_set1_epi8(15);
  const __m512 steps = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 smallest_normal = _mm512_set1_ps(std::numeric_limits<float>::min()), zero = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 values = _mm512_fmadd_ps(steps, _mm512_set1_ps(dm[2 * g]), _mm512_set1_ps(dm[2 * g + 1]));
    __m512 magnitude = _mm512_abs_ps(values);
    __mmask16 below = _mm512_cmp_ps_mask(magnitude, smallest_normal, _CMP_LT_OQ);
    __mmask16 exceptional =  // subnormal (0 < |v| < smallest normal) or NaN
        _mm512_mask_cmp_ps_mask(below, magnitude, zero, _CMP_GT_OQ) | _mm512_cmp_ps_mask(values, values, _CMP_UNORD_Q);
    __m512i table;
    if (__builtin_expect(exceptional, 0)) {
      alignas(64) float exact[16];
      alignas(64) uint16_t rounded[32] = {};
      _mm512_store_ps(exact, values);
      for (int j = 0; j < 16; ++j) rounded[j] = bfloat16_bits(exact[j]);
      table = _mm512_load_si512(rounded);
    } else {
      table = _mm512_castsi256_si512(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(values)));
    }
    __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + g * 16));
    __m256i nibbles = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), nibble), _mm_and_si128(bytes, nibble));
    __m512i weights = _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(nibbles), table);  // steps j and j + 16 of byte j
    if (stream) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(row + g * kGroup), weights);
    } else {
      _mm512_storeu_si512(row + g * kGroup, weights);
    }
  }
}
#endif

// Matrices past this many bytes are written with non-temporal stores (see unpack_int4_row_bfloat16): a product's
// weights of a 7B model (32-90 MB in bfloat16) leave the caches before the product reads them back, while a small
// model's (SmolLM2's 0.7-1.8 MB) are read from the cache and would be slower to read from memory (4.3 -> 4.5 ms
// for 512 rows x 1536 x 576).
constexpr int64_t kStreamedBytes = 16 << 20;

template <typename O>
void dequantize_rows(const Matrix& m, bool int4, O* out) {
  // Rows of a multiple of 32 bfloat16 weights keep the matrix's 64-byte alignment.
  [[maybe_unused]] bool stream = m.rows * m.cols * int64_t(sizeof(O)) > kStreamedBytes && reinterpret_cast<uintptr_t>(out) % 64 == 0;
  at::parallel_for(0, m.rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row(std::is_same_v<O, float> ? 0 : m.cols);  // one row in float32, in the L1 cache
    for (int64_t r = begin; r < end; ++r) {
      O* target = out + r * m.cols;
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
      if constexpr (std::is_same_v<O, c10::BFloat16>) {
        if (int4) {
          unpack_int4_row_bfloat16(m, r, reinterpret_cast<uint16_t*>(target), stream);
          if (stream && r + 1 == end) _mm_sfence();  // the streamed rows are seen by every thread after the loop
          continue;
        }
      }
#endif
      float* values = std::is_same_v<O, float> ? reinterpret_cast<float*>(target) : row.data();
      if (int4) {
        unpack_int4_row(m, r, values);
      } else {
        const int8_t* w = static_cast<const int8_t*>(m.data) + r * m.cols;
        const float* s = m.scale + r * m.scales_per_row();
        for (int64_t b = 0; b < m.cols; b += m.scale_group) {
          int64_t last = std::min(b + m.scale_group, m.cols);
          float d = s[b / m.scale_group];
#pragma omp simd
          for (int64_t c = b; c < last; ++c) values[c] = w[c] * d;
        }
      }
      if constexpr (!std::is_same_v<O, float>) {
        static_assert(std::is_same_v<O, c10::BFloat16>, "dequantize_rows writes float32 or bfloat16");
        uint16_t* bits = reinterpret_cast<uint16_t*>(target);
#pragma omp simd
        for (int64_t c = 0; c < m.cols; ++c) bits[c] = bfloat16_bits(values[c]);
      }
    }
  });
}

void dequantize_into(at::Tensor weight, at::Tensor scale, at::Tensor out) {
  TORCH_CHECK(weight.scalar_type() == at::kChar || weight.scalar_type() == at::kByte,
              "dequantize: weights must be int8 or int4 (uint8), got ", weight.scalar_type());
  TORCH_CHECK(scale.scalar_type() == (weight.scalar_type() == at::kByte ? at::kHalf : at::kFloat) && scale.is_contiguous(),
              "dequantize: scales must be contiguous float32 (int8 weights) or float16 (int4), got ", scale.scalar_type());
  Matrix m = matrix(weight, scale, {});
  TORCH_CHECK(out.is_contiguous() && out.dim() == 2 && out.size(0) == m.rows && out.size(1) == m.cols,
              "dequantize_into: out must be a contiguous (", m.rows, ", ", m.cols, ") matrix, got ", out.sizes());
  bool int4 = weight.scalar_type() == at::kByte;
  switch (out.scalar_type()) {
    case at::kFloat: dequantize_rows(m, int4, out.data_ptr<float>()); break;
    case at::kBFloat16: dequantize_rows(m, int4, out.data_ptr<c10::BFloat16>()); break;
    default: TORCH_CHECK(false, "dequantize_into: out must be float32 or bfloat16, got ", out.scalar_type());
  }
}

// The float32 matrix, made fresh.
at::Tensor dequantize(at::Tensor weight, at::Tensor scale) {
  TORCH_CHECK(weight.dim() == 2, "dequantize: weights must be a 2-D matrix, got ", weight.dim(), " dimensions");
  at::Tensor result = at::empty({weight.size(0), weight.size(1) * (weight.scalar_type() == at::kByte ? 2 : 1)},
                                scale.options().dtype(at::kFloat));
  dequantize_into(weight, scale, result);
  return result;
}

// Quantizing at load: linear.py's _int8_blocks and _int4_groups in one pass over each row, reading the
// checkpoint's float32, bfloat16 or float16 weights as they are stored. PyTorch's way is a dozen passes over
// float32 copies of the matrix (0.38 CPU s for an 11008 x 4096 matrix, most of a 7B-shaped int4 load). The
// results are those of the plain path bit for bit, which the tests check on every kind of group: the same
// float32 operations in the same order, true divisions (by 127, by 15, by the scale: never a product with
// the reciprocal), rounding half to even (nearbyint, as torch.round), float16 roundings of the pairs as
// Tensor.half() (to nearest even). A group's weights rebuilt from its steps, q * d + m with q in 0..15 and d
// a float16, come out the same whether or not the compiler fuses them into an FMA: q * d has at most 15
// significant bits, so the product is exact. A block or group holding NaN or infinity gets a scale or pair
// that is not finite, as PyTorch's amax and amin give, which linear.py refuses. A group's smallest and largest
// weights are taken as 0.0 where they are -0.0, in both paths: which zero PyTorch's amin and amax return for a
// group holding both depends on the order of its reduction. An 11008 x 4096 bfloat16 matrix, one thread: int4
// 0.05-0.06 CPU s, int8 0.07-0.08.

template <typename T>
inline void row_as_float(const T* weights, float* row, int64_t n) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    const uint16_t* bits = reinterpret_cast<const uint16_t*>(weights);
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      uint32_t wide = uint32_t(bits[c]) << 16;
      std::memcpy(row + c, &wide, sizeof(float));
    }
  } else {
    for (int64_t c = 0; c < n; ++c) row[c] = as_float(weights[c]);
  }
}

// float32 to the nearest float16 (ties to even; past 65504 infinity), as Tensor.half(), and back (exact).
inline float as_half(float v) { return static_cast<float>(c10::Half(v)); }

// q rounded half to even, then clamped to [lowest, highest]; NaN goes to lowest (its block is refused anyway).
inline float step_in(float q, float lowest, float highest) {
  q = std::nearbyint(q);
  return q > lowest ? (q < highest ? q : highest) : lowest;
}

// The smallest and largest of a group's 32 weights; both NaN where one is, and 0.0 where they are -0.0 (the
// plain path's `+ 0.0`). By halving: the compiler vectorizes no min or max over a loop, since reordering one
// changes which of two equal zeros, or of a NaN and a number, it returns.
inline std::pair<float, float> extremes(const float* w) {
  float low[16], high[16];
#pragma omp simd
  for (int j = 0; j < 16; ++j) {
    low[j] = std::min(w[j], w[j + 16]);
    high[j] = std::max(w[j], w[j + 16]);
  }
  for (int width = 8; width > 0; width /= 2) {
#pragma omp simd
    for (int j = 0; j < width; ++j) {
      low[j] = std::min(low[j], low[j + width]);
      high[j] = std::max(high[j], high[j + width]);
    }
  }
  int unordered = 0;
#pragma omp simd reduction(| : unordered)
  for (int j = 0; j < kGroup; ++j) unordered |= w[j] != w[j];
  if (unordered) return {NAN, NAN};
  return {low[0] + 0.0f, high[0] + 0.0f};
}

// Counts of steps a side for symmetric_grid_steps, and from lowest to highest for grid_steps (NaN: never near).
constexpr float kSymmetricCounts[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
constexpr float kFewerCounts[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, NAN, NAN};

// Whether a group may lie on a grid of `counts` steps over `span` from `origin`: a cheap first look at its first
// two weights, which nearly every group that is no grid (a float checkpoint's) fails, one division each instead of
// one per count. Each weight's share of the span times some count must be within 2/1024 of a whole number: looser
// than the tests of grid_steps and symmetric_grid_steps (against rounding errors of a few units in the last place),
// so it drops no group they would keep. The quantizers look here first, then whether their own grid rebuilds the
// group (a Q4_1 or Q8_0 file's does), and only then search.
inline bool may_lie_on_a_grid(const float* w, float origin, float span, const float (&counts)[16]) {
  if (!(span > 0) || !std::isfinite(span)) return false;
  for (int j = 0; j < 2; ++j) {
    float share = (w[j] - origin) / span;
    int near = 0;
#pragma omp simd reduction(| : near)
    for (int k = 0; k < 16; ++k) {
      float r = share * counts[k];
      near |= std::abs(r - std::nearbyint(r)) <= 2.0f / 1024;
    }
    if (!near) return false;
  }
  return true;
}

// The fewest steps n, 1 to 16, for which every weight of a block is a whole multiple of largest / n exactly; 0 where
// there is none. llama.cpp's Q4_0 and Q5_0 blocks, d * (q - 8) and d * (q - 16) with a float16 d, have their largest
// magnitude at most 8 or 16 steps from zero, so that largest / 127 is not their grid and moves their weights.
inline int symmetric_grid_steps(const float* w, float largest) {
  for (int n = 1; n <= 16; ++n) {
    float step = largest / float(n);
    bool on = true;
    for (int j = 0; j < kGroup && on; ++j) on = std::nearbyint(w[j] / step) * step == w[j];
    if (on) return n;
  }
  return 0;
}

// int8: each block of 32 weights along a row gets scale = max(|w|, 1e-12) / 127 and steps round(w / scale); a block
// those steps do not rebuild exactly that lies on a grid of at most 16 steps a side (symmetric_grid_steps) gets
// that grid's step as its scale instead, which rebuilds it exactly.
template <typename T>
bool quantize_int8_rows(const T* weights, int64_t rows, int64_t cols, int8_t* steps, float* scales) {
  int64_t blocks = (cols + kGroup - 1) / kGroup;
  std::atomic<bool> finite{true};
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    bool rows_finite = true;
    std::vector<float> row(blocks * kGroup, 0.0f);  // a short last block padded with zeros, as the plain path's
    std::vector<int8_t> row_steps(blocks * kGroup);
    for (int64_t r = begin; r < end; ++r) {
      row_as_float(weights + r * cols, row.data(), cols);
      for (int64_t b = 0; b < blocks; ++b) {
        const float* w = row.data() + b * kGroup;
        auto [lowest, highest] = extremes(w);
        float largest = std::max(std::abs(lowest), std::abs(highest));
        float scale = std::max(largest, 1e-12f) / 127.0f;  // NaN stays NaN
        scales[r * blocks + b] = scale;
        rows_finite &= std::isfinite(scale);
        int8_t* q = row_steps.data() + b * kGroup;
#pragma omp simd
        for (int j = 0; j < kGroup; ++j) q[j] = int8_t(step_in(w[j] / scale, -127, 127));
        auto rebuilt = [&] {
          int equal = 1;
#pragma omp simd reduction(& : equal)
          for (int j = 0; j < kGroup; ++j) equal &= float(q[j]) * scale == w[j];
          return equal != 0;
        };
        int n = may_lie_on_a_grid(w, 0.0f, largest, kSymmetricCounts) && !rebuilt() ? symmetric_grid_steps(w, largest)
                                                                                     : 0;
        if (n) {
          scale = largest / float(n);
          scales[r * blocks + b] = scale;
#pragma omp simd
          for (int j = 0; j < kGroup; ++j) q[j] = int8_t(step_in(w[j] / scale, -127, 127));
        }
      }
      std::copy_n(row_steps.data(), cols, steps + r * cols);
    }
    if (!rows_finite) finite = false;
  });
  return finite;
}

// Whether the group's weights lie on the grid top + step * q, q in 0..15, with their steps in `q`; step a float16.
inline bool on_q4_0_grid(const float* w, int n, float step, float top, float* q) {
  bool on = true;
  for (int j = 0; j < n; ++j) {
    q[j] = std::nearbyint((w[j] - top) / step);
    on &= q[j] >= 0 && q[j] <= 15 && q[j] * step + top == w[j];
  }
  return on;
}

// The fewest steps, 1 to 14, of an even grid from a group's smallest weight to its largest that every weight lies on
// (within 1/1024 of a step, r = (w - lowest) / (span / steps) against its nearest integer); 0 where there is none.
// llama.cpp's Q4_K groups are such grids: d * scale * q - dmin * min, q in 0..15, a float16 d times a six-bit
// scale, which float16 cannot hold, and groups often leave steps at either end unused, so the span / 15 grid moves
// their weights. Each weight is tried against all fourteen grids at once.
inline int grid_steps(const float* w, float lowest, float highest) {
  constexpr int kFewerSteps = 14;
  float span = highest - lowest;
  float step[kFewerSteps];
  int on[kFewerSteps];
#pragma omp simd
  for (int k = 0; k < kFewerSteps; ++k) step[k] = span / float(k + 1), on[k] = 1;
  for (int j = 0; j < kGroup; ++j) {
    int any = 0;
#pragma omp simd reduction(| : any)
    for (int k = 0; k < kFewerSteps; ++k) {
      float r = (w[j] - lowest) / step[k];
      on[k] &= std::abs(r - std::nearbyint(r)) <= 1.0f / 1024;
      any |= on[k];
    }
    if (!any) return 0;
  }
  for (int k = 0; k < kFewerSteps; ++k)
    if (on[k]) return k + 1;
  return 0;
}

// int4: each group of 32 gets the float16 pair (d, m): m the smallest weight, d a fifteenth of the span above m,
// steps round((w - m) / d); or llama.cpp's Q4_0 grid d * (q - 8) where the group lies on it and not on the first;
// or, for a group on neither, the span over the fewest steps of a grid it lies on (grid_steps) as d.
template <typename T>
bool quantize_int4_rows(const T* weights, int64_t rows, int64_t cols, uint8_t* packed, c10::Half* pairs) {
  int64_t groups = cols / kGroup;
  std::atomic<bool> finite{true};
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    bool rows_finite = true;
    std::vector<float> row(cols);
    float q[kGroup], grid[kGroup];
    for (int64_t r = begin; r < end; ++r) {
      row_as_float(weights + r * cols, row.data(), cols);
      for (int64_t g = 0; g < groups; ++g) {
        const float* w = row.data() + g * kGroup;
        auto [lowest, highest] = extremes(w);
        float minimum = as_half(lowest);
        float scale = as_half((highest - minimum) / 15.0f);
        float divisor = scale == 0 ? 1.0f : scale;  // a span below float16's smallest scale: every step 0
#pragma omp simd
        for (int j = 0; j < kGroup; ++j) q[j] = step_in((w[j] - minimum) / divisor, 0, 15);
        auto rebuilt = [&] {
          int equal = 1;
#pragma omp simd reduction(& : equal)
          for (int j = 0; j < kGroup; ++j) equal &= q[j] * scale + minimum == w[j];
          return equal != 0;
        };
        // The Q4_0 grid's d has the sign that puts the weight of the largest magnitude at step 0 (-8 d).
        float largest = -lowest > highest ? lowest : highest;
        float step = largest / -8.0f;
        if (step != 0 && as_half(step) == step && on_q4_0_grid(w, 4, step, largest, grid) &&
            on_q4_0_grid(w, kGroup, step, largest, grid)) {
          if (!rebuilt()) {
            std::copy_n(grid, kGroup, q);
            scale = step;
            minimum = largest;
          }
        } else if (may_lie_on_a_grid(w, lowest, highest - lowest, kFewerCounts) && !rebuilt()) {
          int steps = grid_steps(w, lowest, highest);
          float own = steps ? as_half((highest - lowest) / float(steps)) : 0.0f;
          if (own != 0 && std::isfinite(own)) {
            scale = own;
#pragma omp simd
            for (int j = 0; j < kGroup; ++j) q[j] = step_in((w[j] - minimum) / scale, 0, 15);
          }
        }
        c10::Half* pair = pairs + (r * groups + g) * 2;
        pair[0] = c10::Half(scale);
        pair[1] = c10::Half(minimum);
        rows_finite &= (pair[0].x & 0x7C00) != 0x7C00 && (pair[1].x & 0x7C00) != 0x7C00;  // not inf or NaN
        uint8_t* bytes = packed + r * (cols / 2) + g * 16;
#pragma omp simd
        for (int j = 0; j < 16; ++j) bytes[j] = uint8_t(q[j]) | uint8_t(uint8_t(q[j + 16]) << 4);
      }
    }
    if (!rows_finite) finite = false;
  });
  return finite;
}

template <typename Run>
void with_weights(const at::Tensor& weight, const char* op, Run run) {
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), op, ": weight must be a contiguous 2-D matrix, got ",
              weight.sizes(), " with strides ", weight.strides());
  switch (weight.scalar_type()) {
    case at::kFloat: run(weight.data_ptr<float>()); break;
    case at::kBFloat16: run(weight.data_ptr<c10::BFloat16>()); break;
    case at::kHalf: run(weight.data_ptr<c10::Half>()); break;
    default: TORCH_CHECK(false, op, ": weight must be float32, bfloat16 or float16, got ", weight.scalar_type());
  }
}

// The packed weights, their scales, and whether every scale is finite (linear.py refuses the layer otherwise).
std::tuple<at::Tensor, at::Tensor, bool> quantize_int8(at::Tensor weight) {
  int64_t rows = weight.size(0), cols = weight.dim() == 2 ? weight.size(1) : 0;
  at::Tensor steps = at::empty({rows, cols}, weight.options().dtype(at::kChar));
  at::Tensor scales = at::empty({rows, (cols + kGroup - 1) / kGroup}, weight.options().dtype(at::kFloat));
  bool finite = true;
  with_weights(weight, "quantize_int8", [&](auto* w) {
    finite = quantize_int8_rows(w, rows, cols, steps.data_ptr<int8_t>(), scales.data_ptr<float>());
  });
  return {steps, scales, finite};
}

std::tuple<at::Tensor, at::Tensor, bool> quantize_int4(at::Tensor weight) {
  int64_t rows = weight.size(0), cols = weight.dim() == 2 ? weight.size(1) : 0;
  TORCH_CHECK(cols % kGroup == 0, "quantize_int4: a row's ", cols, " weights do not fill groups of ", kGroup);
  at::Tensor packed = at::empty({rows, cols / 2}, weight.options().dtype(at::kByte));
  at::Tensor pairs = at::empty({rows, cols / kGroup, 2}, weight.options().dtype(at::kHalf));
  bool finite = true;
  with_weights(weight, "quantize_int4", [&](auto* w) {
    finite = quantize_int4_rows(w, rows, cols, packed.data_ptr<uint8_t>(), pairs.data_ptr<c10::Half>());
  });
  return {packed, pairs, finite};
}

// Dropout drawn as PyTorch draws it, for LoRA's lora_dropout while training.
//
// F.dropout on the CPU multiplies x by bernoulli_(1 - p) / (1 - p). Where PyTorch does not hand bernoulli_ to MKL
// (builds without MKL, and CPUs other than Intel's), it draws every element in turn from its CPU generator, a
// Mersenne Twister: two 32-bit words, the first the high half of a 64-bit number whose low 53 bits over 2^53 are
// the uniform number compared with the probability. That loop costs ~5 ns an element, 2.7 ms for one 128 x 4096
// activation, twenty times the multiplication. The same words come out of the generator's state 624 at a time:
// here each block's refill and the tempering and comparing of its words are loops the compiler vectorizes, so
// the mask is bernoulli_'s bit for bit, and the generator is left where bernoulli_ leaves it (gradient
// checkpointing restores the state before recomputing a layer and so draws the same mask again). models/lora.py
// checks once per process that the masks agree with bernoulli_'s before it uses them.

constexpr int kTwisterWords = at::MERSENNE_STATE_N;  // the state's words, drawn before the next refill
constexpr int kTwisterShift = at::MERSENNE_STATE_M;

inline uint32_t twisted(uint32_t word, uint32_t next_word, uint32_t shifted_word) {
  uint32_t mixed = (word & 0x80000000u) | (next_word & 0x7fffffffu);
  return shifted_word ^ (mixed >> 1) ^ ((next_word & 1u) ? 0x9908b0dfu : 0u);
}

// The generator's next 624 words, in place. Each word reads the one 397 places on (mod 624): the new one where
// that is already replaced, which is 227 places back, further than any vector reaches.
void refill_twister(uint32_t* s) {
  constexpr int n = kTwisterWords, m = kTwisterShift;
#pragma omp simd
  for (int i = 0; i < n - m; ++i) s[i] = twisted(s[i], s[i + 1], s[i + m]);
#pragma omp simd safelen(n - m)
  for (int i = n - m; i < n - 1; ++i) s[i] = twisted(s[i], s[i + 1], s[i + m - n]);
  s[n - 1] = twisted(s[n - 1], s[0], s[m - 1]);
}

inline uint32_t tempered(uint32_t y) {
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  return y ^ (y >> 18);
}

// The generator's next `count` words, tempered, into `out`, refilling its state as the engine does: it draws
// state_[next_] after decrementing left_, and refills when left_ reaches 0 (so left_ is one more than the words
// left to draw).
void twister_words(at::mt19937_data_pod& state, uint32_t* out, int64_t count) {
  uint32_t* s = state.state_.data();
  while (count > 0) {
    if (state.left_ == 1) {
      refill_twister(s);
      state.left_ = kTwisterWords + 1;
      state.next_ = 0;
    }
    int64_t take = std::min<int64_t>(state.left_ - 1, count);
    const uint32_t* from = s + state.next_;
#pragma omp simd
    for (int64_t i = 0; i < take; ++i) out[i] = tempered(from[i]);
    state.left_ -= take;
    state.next_ += take;
    out += take;
    count -= take;
  }
}

// The default CPU generator, its mutex held while a draw reads words from a copy of its state (twister_words);
// keep() writes the state back, leaving the generator where the PyTorch call that the draw reproduces leaves it.
class DefaultTwister {
 public:
  explicit DefaultTwister(const char* op)
      : generator_(at::detail::getDefaultCPUGenerator()), lock_(generator_.mutex()),
        cpu_(generator_.get<at::CPUGeneratorImpl>()), engine_(cpu_->engine()), state(engine_.data()) {
    TORCH_CHECK(state.left_ >= 1 && state.next_ + state.left_ - 1 <= static_cast<uint32_t>(kTwisterWords), op,
                ": the CPU generator's state is not one PyTorch's engine leaves (left ", state.left_, ", next ",
                state.next_, ")");
  }
  void keep() {
    engine_.set_data(state);
    cpu_->set_engine(engine_);
  }

 private:
  at::Generator generator_;
  std::lock_guard<std::mutex> lock_;
  at::CPUGeneratorImpl* cpu_;
  at::mt19937 engine_;

 public:
  at::mt19937_data_pod state;  // declared last: it is read from the engine
};

// bernoulli_(probability)'s values for n elements as bytes (1 or 0), drawn from PyTorch's default CPU generator and
// advancing it as that call does. `stretch(begin, end)` runs on each stretch of elements as soon as their bytes
// are written, while they are in the cache.
template <typename F>
void draw_bernoulli(int64_t n, double probability, uint8_t* drawn, F&& stretch) {
  // A pair of words (high, low) makes a 64-bit number; its low 53 bits over 2^53 are below p exactly when they
  // are below p * 2^53, which a double holds exactly.
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(std::ldexp(probability, 53)));
  constexpr int64_t kStretch = 2048;  // elements: their words fill 16 KB, and the loops' vectors evenly
  uint32_t words[2 * kStretch];
  DefaultTwister twister("dropout");
  for (int64_t begin = 0; begin < n; begin += kStretch) {
    int64_t count = std::min(kStretch, n - begin);
    twister_words(twister.state, words, 2 * count);
    uint8_t* out = drawn + begin;
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) {
      uint64_t pair;  // the high word in the low half
      std::memcpy(&pair, words + 2 * k, sizeof pair);
      out[k] = (((pair & 0x1fffffu) << 32) | (pair >> 32)) < threshold;
    }
    stretch(begin, begin + count);
  }
  twister.keep();
}

// out = x * (kept ? scale : 0) in x's dtype: PyTorch's x * noise, whose values are 0 and scale. Multiplying by
// zero rather than writing it keeps what x * 0 gives (-0 for negative x, NaN for infinite x).
template <typename T>
void times_kept(const T* x, const uint8_t* kept, float scale, T* out, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) out[i] = x[i] * (kept[i] ? scale : 0.0f);
  } else {
    static_assert(std::is_same_v<T, c10::BFloat16>, "times_kept: float32 or bfloat16");
    const uint16_t* xb = reinterpret_cast<const uint16_t*>(x);
    uint16_t* ob = reinterpret_cast<uint16_t*>(out);
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits = static_cast<uint32_t>(xb[i]) << 16;
      float value;
      std::memcpy(&value, &bits, sizeof value);
      ob[i] = bfloat16_bits(value * (kept[i] ? scale : 0.0f));
    }
  }
}

void check_dropout_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_contiguous() && t.device().is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16),
              "dropout: ", name, " must be a contiguous float32 or bfloat16 CPU tensor, got ", t.scalar_type(),
              t.is_contiguous() ? "" : " (not contiguous)");
}

// F.dropout(x, 1 - keep, training=True) on the default CPU generator, and the mask for the backward. scale is
// 1 / keep as PyTorch rounds it to x's dtype (the caller computes it with PyTorch's own division).
std::tuple<at::Tensor, at::Tensor> dropout(const at::Tensor& x, double keep, double scale) {
  check_dropout_tensor(x, "x");
  TORCH_CHECK(keep > 0.0 && keep < 1.0, "dropout: keep must be in (0, 1), got ", keep);
  at::Tensor kept = at::empty(x.sizes(), x.options().dtype(at::kBool));
  at::Tensor out = at::empty_like(x);
  uint8_t* k = reinterpret_cast<uint8_t*>(kept.data_ptr<bool>());
  auto run = [&](auto* xd, auto* od) {
    draw_bernoulli(x.numel(), keep, k, [&](int64_t begin, int64_t end) {
      times_kept(xd, k, static_cast<float>(scale), od, begin, end);
    });
  };
  if (x.scalar_type() == at::kFloat)
    run(x.data_ptr<float>(), out.data_ptr<float>());
  else
    run(x.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>());
  return {out, kept};
}

// The gradient through dropout: grad * (kept ? scale : 0), as PyTorch's product's backward multiplies by the noise.
at::Tensor dropout_backward(const at::Tensor& grad, const at::Tensor& kept, double scale) {
  at::Tensor g = grad.contiguous();
  check_dropout_tensor(g, "grad");
  TORCH_CHECK(kept.scalar_type() == at::kBool && kept.is_contiguous() && kept.numel() == g.numel(),
              "dropout_backward: kept must be the forward's contiguous bool mask of ", g.numel(), " elements");
  at::Tensor out = at::empty_like(g);
  const uint8_t* k = reinterpret_cast<const uint8_t*>(kept.data_ptr<bool>());
  auto run = [&](auto* gd, auto* od) {
    at::parallel_for(0, g.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
      times_kept(gd, k, static_cast<float>(scale), od, begin, end);
    });
  };
  if (g.scalar_type() == at::kFloat)
    run(g.data_ptr<float>(), out.data_ptr<float>());
  else
    run(g.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>());
  return out;
}

// ---- A draw of one token per row, as torch.multinomial(probs, 1) draws it ----
//
// On the CPU, torch.multinomial(probs, 1) fills a tensor like probs with exponential_(1) (each element from the
// default generator's next two words, a uniform u of 53 bits, then -log1p(-u) in double, rounded to probs' float)
// and takes the first argmax of probs / q, NaN above every number. Those V logarithms cost ~20 ns each, 1 ms a
// token of a 49152-token vocabulary, as long as SmolLM2's whole int4 step. Here the words come from the
// generator's state as the dropout's do, but a logarithm is taken only where the quotient could be the largest:
// -log1p(-u) >= u + u^2 / 2, so p / (u + u^2 / 2) bounds p / q from above, and an element whose bound (with room
// for the roundings) stays under the quotient of the element with the largest bound is never the argmax. The
// index and the generator's state after the call are torch.multinomial's (sampling.py checks that once per
// process, as models/lora.py checks the dropout's masks).

// The row's index, from its probabilities p and the 53-bit integers of its uniforms.
int64_t multinomial_row(const float* p, const uint64_t* bits, double* bound, int64_t n) {
  constexpr double kUnit = 1.0 / (uint64_t(1) << 53);
  auto quotient = [&](int64_t i) {  // exactly what torch divides: p by -log1p(-u) rounded to float
    double u = static_cast<double>(bits[i]) * kUnit;
    return p[i] / static_cast<float>(-1.0 * std::log1p(-u));
  };
  for (int64_t i = 0; i < n; ++i)  // 0 / 0: NaN, which argmax puts first
    if (bits[i] == 0 && p[i] == 0.f) return i;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    double u = static_cast<double>(bits[i]) * kUnit;
    bound[i] = static_cast<double>(p[i]) / (u + 0.5 * u * u);  // p / 0 is inf, as p / q is then
  }
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (bound[i] > bound[best]) best = i;
  float top = quotient(best);
  // float's rounding of q and of the quotient moves it by under 2^-23 of itself: 1e-6 is ample room.
  double needed = static_cast<double>(top) / (1.0 + 1e-6);
  for (int64_t i = 0; i < n; ++i) {
    if (i == best || !(bound[i] >= needed)) continue;
    float value = quotient(i);
    if (value > top || (value == top && i < best)) {
      top = value;
      best = i;
    }
  }
  return best;
}

// torch.multinomial(probs, 1) for (R, V) float32 probabilities, drawn from the default CPU generator, which it
// leaves where that call does. Rows torch would refuse (a value negative, infinite or NaN; no positive value)
// draw nothing and give an empty result, for the caller to hand the call to torch and its error.
at::Tensor multinomial_one(const at::Tensor& probs) {
  TORCH_CHECK(probs.dim() == 2 && probs.scalar_type() == at::kFloat && probs.is_contiguous() && probs.device().is_cpu(),
              "multinomial_one: probs must be a contiguous (rows, vocabulary) float32 CPU tensor");
  const int64_t rows = probs.size(0), n = probs.size(1);
  const float* p = probs.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    bool valid = true, positive = false;
    for (int64_t i = 0; i < n; ++i) {
      float value = p[r * n + i];
      valid &= value >= 0.f && value < INFINITY;  // NaN fails both
      positive |= value > 0.f;
    }
    if (!valid || !positive) return at::empty({0}, probs.options().dtype(at::kLong));
  }
  at::Tensor result = at::empty({rows, 1}, probs.options().dtype(at::kLong));
  std::vector<uint32_t> words(2 * n);
  std::vector<uint64_t> bits(n);
  std::vector<double> bound(n);
  DefaultTwister twister("multinomial_one");
  for (int64_t r = 0; r < rows; ++r) {
    twister_words(twister.state, words.data(), 2 * n);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)  // the first word is the high half
      bits[i] = ((static_cast<uint64_t>(words[2 * i]) & 0x1fffffu) << 32) | words[2 * i + 1];
    result.data_ptr<int64_t>()[r] = multinomial_row(p + r * n, bits.data(), bound.data(), n);
  }
  twister.keep();
  return result;
}

// F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True) with query t seeing keys up to S - T + t
// (is_causal when S = T), float32 or bfloat16, any strides with each head's elements contiguous. The output is
// SDPA's: (B, nh, T, hs), laid out as (B, T, nh, hs) so that merging the heads is a view.
at::Tensor prompt_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "prompt_attention: q, k and v must be 4-dimensional");
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "prompt_attention: CPU tensors only");
  TORCH_CHECK((q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16) &&
                  k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "prompt_attention: q, k and v must all be float32 or all bfloat16");
  const int64_t B = q.size(0), heads = q.size(1), T = q.size(2), hd = q.size(3), kv_heads = k.size(1), S = k.size(2);
  TORCH_CHECK(k.size(0) == B && v.size(0) == B && v.size(1) == kv_heads && v.size(2) == S && k.size(3) == hd &&
                  v.size(3) == hd, "prompt_attention: k and v must be (B, n_kv, S, hs) with q's B and hs");
  TORCH_CHECK(kv_heads > 0 && heads % kv_heads == 0, "prompt_attention: q's heads (", heads,
              ") must be a multiple of k's (", kv_heads, ")");
  TORCH_CHECK(S >= T, "prompt_attention: k has ", S, " positions, fewer than q's ", T);
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1,
              "prompt_attention: each head's elements must be contiguous (stride 1 on the last dimension)");
  at::Tensor out = at::empty({B, T, heads, hd}, q.options());
  if (out.numel() == 0) return out.transpose(1, 2);
  const int64_t group = heads / kv_heads, blocks = (T + kPromptRows - 1) / kPromptRows;
  // A short prompt's attention (under ~a million multiply-adds: 32 positions of SmolLM2's heads, 10-20 us) runs on
  // the calling thread: each parallel region waits for every thread it starts, and with a core taken by other work
  // the one not running there held a 7-token prompt's two regions for 16 ms a layer (SDPA's one: 7.7 ms).
  const bool inline_only = T * S * heads * hd < (int64_t(1) << 20);
  auto grain = [&](int64_t count) { return inline_only ? std::max<int64_t>(count, 1) : int64_t(1); };
  auto run = [&](auto* qd, auto* kd, auto* vd, auto* od) {
    using C = std::remove_const_t<std::remove_pointer_t<decltype(qd)>>;
    const bool pairs = prompt_pairs<C>(hd);
    PromptBlocks packed;
    packed.per_head = (S + kKeyBlock - 1) / kKeyBlock;
    const int64_t all_blocks = B * kv_heads * packed.per_head;
    if (pairs) {
      packed.key_pairs.resize(all_blocks * hd / 2 * kKeyBlock);
      packed.value_pairs.resize(all_blocks * kKeyBlock * hd);
    } else {
      packed.keys.resize(all_blocks * hd * kKeyBlock);
    }
    at::parallel_for(0, all_blocks, grain(all_blocks), [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {
        int64_t pair = index / packed.per_head, first = index % packed.per_head * kKeyBlock;
        int64_t b = pair / kv_heads, kv = pair % kv_heads;
        pack_key_block(packed, index, pairs, kd + b * k.stride(0) + kv * k.stride(1) + first * k.stride(2),
                       vd + b * v.stride(0) + kv * v.stride(1) + first * v.stride(2), k.stride(2), v.stride(2),
                       std::min(kKeyBlock, S - first), hd);
      }
    });
    at::parallel_for(0, B * kv_heads * blocks, grain(B * kv_heads * blocks), [&](int64_t begin, int64_t end) {
      PromptScratch scratch;
      for (int64_t task_index = begin; task_index < end; ++task_index) {
        auto [pair, t0] = prompt_task_place(task_index, B * kv_heads, blocks);
        int64_t b = pair / kv_heads, kv = pair % kv_heads;
        PromptTask task{hd, std::min(kPromptRows, T - t0), group, static_cast<float>(scale)};
        prompt_task(task, scratch, qd + b * q.stride(0) + kv * group * q.stride(1), q.stride(1), q.stride(2),
                    packed, pair * packed.per_head, vd + b * v.stride(0) + kv * v.stride(1), v.stride(2), S - T, t0, od + (b * T * heads + kv * group) * hd, hd, heads * hd);
      }
    });
  };
  if (q.scalar_type() == at::kFloat)
    run(q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), out.data_ptr<float>());
  else
    run(q.data_ptr<c10::BFloat16>(), k.data_ptr<c10::BFloat16>(), v.data_ptr<c10::BFloat16>(),
        out.data_ptr<c10::BFloat16>());
  return out.transpose(1, 2);
}

}  // namespace

TORCH_LIBRARY(openformers, m) {
  m.def("crowd_team(int left_out, int teams, float seconds) -> ()", crowd_team);
  m.def("team_threads() -> int", team_threads);
  m.def("request_team(int threads) -> ()", request_team);
  m.def("settled_team_threads() -> int", settled_team_threads);
  m.class_<StepWeights>("StepWeights")
      .def(torch::init<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                       std::vector<at::Tensor>>())
      .def("set_family", &StepWeights::set_family)
      .def("set_fused", &StepWeights::set_fused)
      .def("set_qkv_per_head", &StepWeights::set_qkv_per_head)
      .def("set_qkv_blocks", &StepWeights::set_qkv_blocks)
      .def("set_centred_norms", &StepWeights::set_centred_norms)
      .def("set_qk_norms_per_head", &StepWeights::set_qk_norms_per_head)
      .def("set_head_bias", &StepWeights::set_head_bias)
      .def("set_parallel", &StepWeights::set_parallel)
      .def("set_exact_gelu", &StepWeights::set_exact_gelu)
      .def("set_interleaved", &StepWeights::set_interleaved)
      .def("set_residual_scale", &StepWeights::set_residual_scale)
      .def("set_activation", &StepWeights::set_activation)
      .def("set_clip_qkv", &StepWeights::set_clip_qkv)
      .def("set_unrotated", &StepWeights::set_unrotated)
      .def("set_layer_attention_scales", &StepWeights::set_layer_attention_scales)
      .def("set_norms_after_rotation", &StepWeights::set_norms_after_rotation)
      .def("set_experts", &StepWeights::set_experts)
      .def("set_shared_experts", &StepWeights::set_shared_experts)
      .def("set_expert_choice", &StepWeights::set_expert_choice)
      .def("set_expert_groups", &StepWeights::set_expert_groups)
      .def("set_expert_layout", &StepWeights::set_expert_layout)
      .def("set_sinks", &StepWeights::set_sinks)
      .def("set_clamped_swiglu", &StepWeights::set_clamped_swiglu)
      .def("set_sparsemixer", &StepWeights::set_sparsemixer)
      .def("set_norm_biases", &StepWeights::set_norm_biases)
      .def("set_relu", &StepWeights::set_relu)
      .def("set_positions", &StepWeights::set_positions)
      .def("set_alibi", &StepWeights::set_alibi)
      .def("set_embedding_norm", &StepWeights::set_embedding_norm);
  m.def("decode_step(Tensor(a!) x, __torch__.torch.classes.openformers.StepWeights layers, Tensor(b!)[] keys, "
        "Tensor(c!)[] values, int pos, int window, Tensor cos, Tensor sin, float eps, Tensor? norm=None, "
        "Tensor? head=None, Tensor? head_scale=None, bool bfloat16_logits=False, bool follow_team=False, "
        "Tensor? embedding=None, int rotary_row=-1, Tensor? local_cos=None, Tensor? local_sin=None) -> "
        "(Tensor logits, Tensor argmax)");
  m.def("decode_tokens(Tensor tokens, __torch__.torch.classes.openformers.StepWeights layers, Tensor(b!)[] keys, "
        "Tensor(c!)[] values, int pos, int window, Tensor cos, Tensor sin, float eps, Tensor? norm, Tensor? head, "
        "Tensor? head_scale, bool bfloat16_logits, bool follow_team, Tensor? embedding, int rotary_row, "
        "Tensor? local_cos, Tensor? local_sin, int count, int[] eos, Tensor(d!) ids, float seconds) -> int");
  m.def("decode_batch(Tensor(a!) x, __torch__.torch.classes.openformers.StepWeights layers, Tensor(b!)[] keys, "
        "Tensor(c!)[] values, int pos, int window, Tensor cos, Tensor sin, Tensor mask, float eps, "
        "Tensor? norm=None, bool follow_team=False, Tensor? local_cos=None, Tensor? local_sin=None) -> ()");
  m.def("decode_prompt(Tensor(a!) x, __torch__.torch.classes.openformers.StepWeights layers, Tensor(b!)[] keys, "
        "Tensor(c!)[] values, int pos, int window, Tensor cos, Tensor sin, Tensor mask, bool padding_averages, "
        "float eps, Tensor? norm=None, bool follow_team=False, Tensor? local_cos=None, Tensor? local_sin=None) -> ()");
  m.def("matvec(Tensor x, Tensor weight, Tensor? scale) -> Tensor");
  m.def("dequantize(Tensor weight, Tensor scale) -> Tensor");
  m.def("dequantize_into(Tensor weight, Tensor scale, Tensor(a!) out) -> ()");
  m.def("quantize_int8(Tensor weight) -> (Tensor steps, Tensor scale, bool finite)");
  m.def("quantize_int4(Tensor weight) -> (Tensor packed, Tensor pairs, bool finite)");
  m.def("dropout(Tensor x, float keep, float scale) -> (Tensor out, Tensor kept)");
  m.def("dropout_backward(Tensor grad, Tensor kept, float scale) -> Tensor");
  m.def("prompt_attention(Tensor q, Tensor k, Tensor v, float scale) -> Tensor");
  m.def("multinomial_one(Tensor probs) -> Tensor");
  m.def("prompt_attention_vectorized(int head_dim) -> bool", prompt_attention_vectorized);
  m.def("prompt_product(Tensor x, Tensor weight, Tensor scale) -> Tensor");
  m.def("prompt_product_vectorized() -> bool", prompt_product_vectorized);
}

TORCH_LIBRARY_IMPL(openformers, CPU, m) {
  m.impl("decode_step", decode_step);
  m.impl("decode_tokens", decode_tokens);
  m.impl("decode_batch", decode_batch);
  m.impl("decode_prompt", decode_prompt);
  m.impl("matvec", matvec);
  m.impl("dequantize", dequantize);
  m.impl("dequantize_into", dequantize_into);
  m.impl("quantize_int8", quantize_int8);
  m.impl("quantize_int4", quantize_int4);
  m.impl("dropout", dropout);
  m.impl("dropout_backward", dropout_backward);
  m.impl("prompt_attention", prompt_attention);
  m.impl("multinomial_one", multinomial_one);
  m.impl("prompt_product", prompt_product);
}
