// Mamba 1's selective scan over a prompt, forward and backward, built into the same library as decode.cpp (its own
// source file, its operators joining the `openformers` namespace as a fragment).
//
// Each of D channels keeps N states: h_t = exp(dt_t * A) * h_(t-1) + dt_t * B_t * x_t, y_t = C_t . h_t. PyTorch's plain
// path (models/mamba.py sequential_scan) runs this as a few operations per position and keeps every (B, T, D, N)
// state. Here a thread takes a block of channels of one sequence and runs the recurrence over the positions with its
// states in a few kilobytes, writing only y; the decays exp(dt * A) are made a stretch of kPositions positions at a
// time by at::exp (the exponential PyTorch's plain path uses, so the states are its bits). Products and sums are in
// the plain path's order with no fused multiply-adds (the pragma below), so a state is the plain path's bit for bit;
// y's sum over the N states runs in another order than PyTorch's product. With `bfloat16_output`, each state is
// rounded to bfloat16 before its product with C and y is rounded to bfloat16, as the plain path's bfloat16 product.
//
// For training, the forward pass keeps the states at the start of every stretch (`checkpoints`, one in kPositions of
// the states) and the backward pass runs the positions in reverse, a stretch at a time, recomputing its states from
// the checkpoint: the gradients of x, dt, A, B, C and the first state without the (B, T, D, N) states in memory.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

// A state's update is a product then a sum, as PyTorch's: a fused multiply-add would round once, not twice.
#pragma GCC optimize("fp-contract=off")

namespace {

constexpr int64_t kPositions = 64;    // positions whose decays one at::exp call makes, and between checkpoints
constexpr int64_t kBlockStates = 1024;  // states (channels times N) one thread runs at a time

inline float bfloat16_rounded(float v) {  // round to nearest even, as c10::BFloat16's conversion (finite values)
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits = (bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff0000u;
  std::memcpy(&v, &bits, 4);
  return v;
}

struct ScanShape {
  int64_t batch, length, channels, states, block, blocks;
};

ScanShape scan_shape(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& b,
                     const at::Tensor& c, const at::Tensor& state) {
  for (const at::Tensor* t : {&x, &dt, &A, &b, &c, &state})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device().is_cpu(),
                "selective_scan: every tensor must be a contiguous float32 CPU tensor");
  TORCH_CHECK(x.dim() == 3 && dt.sizes() == x.sizes() && A.dim() == 2 && A.size(0) == x.size(2),
              "selective_scan: x and dt must be (B, T, D) and A (D, N)");
  int64_t B = x.size(0), T = x.size(1), D = x.size(2), N = A.size(1);
  TORCH_CHECK(b.dim() == 3 && b.size(0) == B && b.size(1) == T && b.size(2) == N && c.sizes() == b.sizes(),
              "selective_scan: b and c must be (B, T, N)");
  TORCH_CHECK(state.dim() == 3 && state.size(0) == B && state.size(1) == D && state.size(2) == N,
              "selective_scan: state must be (B, D, N)");
  int64_t block = std::min(D, std::max<int64_t>(1, kBlockStates / std::max<int64_t>(N, 1)));
  return {B, T, D, N, block, (D + block - 1) / block};
}

// decays[l][d][n] = exp(dt[t0 + l][d] * A[d][n]) for the `count` positions from t0 and the block's channels.
void make_decays(float* decays, const float* dt, const float* A, const ScanShape& s, int64_t d0, int64_t width,
                 int64_t t0, int64_t count) {
  const int64_t N = s.states;
  for (int64_t l = 0; l < count; ++l)
    for (int64_t d = 0; d < width; ++d) {
      float step = dt[(t0 + l) * s.channels + d0 + d];  // dt: the sequence's (T, D)
      const float* a = A + (d0 + d) * N;
      float* out = decays + (l * width + d) * N;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) out[n] = step * a[n];
    }
  at::Tensor view = at::from_blob(decays, {count * width * N}, at::TensorOptions().dtype(at::kFloat));
  at::exp_out(view, view);
}

// One position's update of the block's states: h = decay * h + (dt * b) * x, channel by channel.
inline void update(float* h, const float* decay, const float* dt, const float* x, const float* b, int64_t width,
                   int64_t N) {
  for (int64_t d = 0; d < width; ++d) {
    float step = dt[d], input = x[d];
    float* hd = h + d * N;
    const float* ad = decay + d * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) hd[n] = ad[n] * hd[n] + step * b[n] * input;
  }
}

// y (B, T, D) float32 and the last state (B, D, N), from `state` (B, D, N); with checkpoints, also the state at
// the start of each stretch of kPositions positions (B, stretches, D, N).
std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan(const at::Tensor& x, const at::Tensor& dt,
                                                             const at::Tensor& A, const at::Tensor& b,
                                                             const at::Tensor& c, const at::Tensor& state,
                                                             bool bfloat16_output, bool checkpoints) {
  ScanShape s = scan_shape(x, dt, A, b, c, state);
  const int64_t B = s.batch, T = s.length, D = s.channels, N = s.states;
  const int64_t stretches = (T + kPositions - 1) / kPositions;
  at::Tensor y = at::empty({B, T, D}, x.options());
  at::Tensor last = at::empty({B, D, N}, x.options());
  at::Tensor kept = at::empty({checkpoints ? B : 0, stretches, D, N}, x.options());
  const float *xp = x.data_ptr<float>(), *dtp = dt.data_ptr<float>(), *Ap = A.data_ptr<float>(),
              *bp = b.data_ptr<float>(), *cp = c.data_ptr<float>(), *sp = state.data_ptr<float>();
  float *yp = y.data_ptr<float>(), *lastp = last.data_ptr<float>(), *keptp = kept.data_ptr<float>();
  at::parallel_for(0, B * s.blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> h(s.block * N), decays(kPositions * s.block * N), rounded(N);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t row = unit / s.blocks, d0 = (unit % s.blocks) * s.block, width = std::min(s.block, D - d0);
      for (int64_t d = 0; d < width; ++d)
        std::copy_n(sp + (row * D + d0 + d) * N, N, h.data() + d * N);
      const float* dt_row = dtp + row * T * D;
      for (int64_t t0 = 0; t0 < T; t0 += kPositions) {
        const int64_t count = std::min(kPositions, T - t0);
        if (checkpoints)
          std::copy_n(h.data(), width * N, keptp + ((row * stretches + t0 / kPositions) * D + d0) * N);
        make_decays(decays.data(), dt_row, Ap, s, d0, width, t0, count);
        for (int64_t l = 0; l < count; ++l) {
          const int64_t t = t0 + l;
          const float* bt = bp + (row * T + t) * N;
          const float* ct = cp + (row * T + t) * N;
          update(h.data(), decays.data() + l * width * N, dt_row + t * D + d0, xp + (row * T + t) * D + d0, bt,
                 width, N);
          float* yt = yp + (row * T + t) * D + d0;
          for (int64_t d = 0; d < width; ++d) {
            const float* hd = h.data() + d * N;
            float sum = 0.f;
            if (bfloat16_output) {
#pragma omp simd
              for (int64_t n = 0; n < N; ++n) rounded[n] = bfloat16_rounded(hd[n]);
#pragma omp simd reduction(+ : sum)
              for (int64_t n = 0; n < N; ++n) sum += rounded[n] * ct[n];
              sum = bfloat16_rounded(sum);
            } else {
#pragma omp simd reduction(+ : sum)
              for (int64_t n = 0; n < N; ++n) sum += hd[n] * ct[n];
            }
            yt[d] = sum;
          }
        }
      }
      for (int64_t d = 0; d < width; ++d)
        std::copy_n(h.data() + d * N, N, lastp + (row * D + d0 + d) * N);
    }
  });
  return {y, last, kept};
}

// The gradients of selective_scan's inputs x, dt, A, b, c and state from those of y (`grad_y`) and of the last state
// (`grad_last`), with the checkpoints its forward pass kept. A's gradient comes per sequence (B, D, N) and b's and
// c's per block of channels (B, blocks, T, N): the caller sums them, so that no two threads add to one place.
std::vector<at::Tensor> selective_scan_backward(const at::Tensor& grad_y, const at::Tensor& grad_last,
                                                const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                                const at::Tensor& b, const at::Tensor& c,
                                                const at::Tensor& checkpoints, bool bfloat16_output) {
  ScanShape s = scan_shape(x, dt, A, b, c, grad_last);
  const int64_t B = s.batch, T = s.length, D = s.channels, N = s.states;
  const int64_t stretches = (T + kPositions - 1) / kPositions;
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == at::kFloat && grad_y.is_contiguous(),
              "selective_scan_backward: grad_y must be a contiguous float32 (B, T, D)");
  TORCH_CHECK(checkpoints.dim() == 4 && checkpoints.size(0) == B && checkpoints.size(1) == stretches &&
                  checkpoints.is_contiguous(),
              "selective_scan_backward: checkpoints must be the forward pass's");
  at::Tensor gx = at::empty_like(x), gdt = at::empty_like(dt), gA = at::zeros({B, D, N}, x.options());
  at::Tensor gb = at::zeros({B, s.blocks, T, N}, x.options()), gc = at::zeros({B, s.blocks, T, N}, x.options());
  at::Tensor gstate = at::empty({B, D, N}, x.options());
  const float *gyp = grad_y.data_ptr<float>(), *glp = grad_last.data_ptr<float>(), *xp = x.data_ptr<float>(),
              *dtp = dt.data_ptr<float>(), *Ap = A.data_ptr<float>(), *bp = b.data_ptr<float>(),
              *cp = c.data_ptr<float>(), *kp = checkpoints.data_ptr<float>();
  float *gxp = gx.data_ptr<float>(), *gdtp = gdt.data_ptr<float>(), *gAp = gA.data_ptr<float>(),
        *gbp = gb.data_ptr<float>(), *gcp = gc.data_ptr<float>(), *gsp = gstate.data_ptr<float>();
  at::parallel_for(0, B * s.blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t most = s.block * N;
    std::vector<float> grad(most), states((kPositions + 1) * most), decays(kPositions * most), carried(N);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t row = unit / s.blocks, block = unit % s.blocks, d0 = block * s.block;
      const int64_t width = std::min(s.block, D - d0);
      const float* dt_row = dtp + row * T * D;
      for (int64_t d = 0; d < width; ++d) std::copy_n(glp + (row * D + d0 + d) * N, N, grad.data() + d * N);
      float* gA_block = gAp + (row * D + d0) * N;
      for (int64_t first = (stretches - 1) * kPositions; first >= 0; first -= kPositions) {
        const int64_t count = std::min(kPositions, T - first);
        // The stretch's states again: states[0] its checkpoint, states[l + 1] the state after position first + l.
        const float* start = kp + ((row * stretches + first / kPositions) * D + d0) * N;
        std::copy_n(start, width * N, states.data());
        make_decays(decays.data(), dt_row, Ap, s, d0, width, first, count);
        for (int64_t l = 0; l < count; ++l) {
          const int64_t t = first + l;
          std::copy_n(states.data() + l * most, width * N, states.data() + (l + 1) * most);
          update(states.data() + (l + 1) * most, decays.data() + l * width * N, dt_row + t * D + d0,
                 xp + (row * T + t) * D + d0, bp + (row * T + t) * N, width, N);
        }
        for (int64_t l = count - 1; l >= 0; --l) {
          const int64_t t = first + l;
          const float* bt = bp + (row * T + t) * N;
          const float* ct = cp + (row * T + t) * N;
          float* gbt = gbp + ((row * s.blocks + block) * T + t) * N;
          float* gct = gcp + ((row * s.blocks + block) * T + t) * N;
          for (int64_t d = 0; d < width; ++d) {
            const int64_t at_t = (row * T + t) * D + d0 + d;
            const float gy = gyp[at_t], step = dt_row[t * D + d0 + d], input = xp[at_t];
            const float* h = states.data() + (l + 1) * most + d * N;  // after position t
            const float* before = states.data() + l * most + d * N;   // before it
            const float* decay = decays.data() + (l * width + d) * N;
            const float* a = Ap + (d0 + d) * N;
            float* g = grad.data() + d * N;
            float* gAd = gA_block + d * N;
            float gstep = 0.f, ginput = 0.f;
#pragma omp simd reduction(+ : gstep, ginput)
            for (int64_t n = 0; n < N; ++n) {
              float hn = bfloat16_output ? bfloat16_rounded(h[n]) : h[n];
              gct[n] += gy * hn;
              float gh = g[n] + gy * ct[n];            // y_t = C_t . h_t, and h_t's share of later positions
              float gu = gh;                           // u = dt * b * x
              gbt[n] += gu * step * input;
              ginput += gu * step * bt[n];
              float glog = gh * before[n] * decay[n];  // decay = exp(dt * A)
              gstep += gu * bt[n] * input + glog * a[n];
              gAd[n] += glog * step;
              g[n] = gh * decay[n];                    // to the state before position t
            }
            gxp[at_t] = ginput;
            gdtp[at_t] = gstep;
          }
        }
      }
      for (int64_t d = 0; d < width; ++d) std::copy_n(grad.data() + d * N, N, gsp + (row * D + d0 + d) * N);
    }
  });
  return {gx, gdt, gA, gb, gc, gstate};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(openformers, m) {
  m.def("selective_scan(Tensor x, Tensor dt, Tensor A, Tensor b, Tensor c, Tensor state, bool bfloat16_output, "
        "bool checkpoints) -> (Tensor y, Tensor last, Tensor checkpoints)");
  m.def("selective_scan_backward(Tensor grad_y, Tensor grad_last, Tensor x, Tensor dt, Tensor A, Tensor b, "
        "Tensor c, Tensor checkpoints, bool bfloat16_output) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(openformers, CPU, m) {
  m.impl("selective_scan", selective_scan);
  m.impl("selective_scan_backward", selective_scan_backward);
}
