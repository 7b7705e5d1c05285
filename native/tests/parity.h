// What the parity drivers share (test_ops.cpp, cuda_ops.cu, cuda_model.cu): seeded normal draws and
// the normalised error NMSE = Σ(got − ref)² / Σ ref² every threshold is stated in.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace kpig::parity {

inline std::vector<float> randn(std::mt19937& rng, size_t n, float scale = 1.f) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Infinite when the sizes differ (a wrong output is never a small error).
template <typename A, typename B>
double nmse(const std::vector<A>& got, const std::vector<B>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double d = double(got[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return num / std::max(den, 1e-300);
}

}  // namespace kpig::parity
