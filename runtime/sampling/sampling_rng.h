// Platform-independent random stream for token sampling: xoshiro256** seeded by splitmix64.
// Standard distributions are implementation-defined, so uniforms are built from raw bits here.
#ifndef TOKENMILL_RUNTIME_SAMPLING_SAMPLING_RNG_H_
#define TOKENMILL_RUNTIME_SAMPLING_SAMPLING_RNG_H_

#include <array>
#include <cstdint>

namespace tokenmill::sampling {

// xoshiro256** (Blackman & Vigna). Not thread-safe; one per sequence.
class SamplingRng {
 public:
  // Expands the 64-bit seed into the 256-bit state with splitmix64 (never all zero).
  explicit SamplingRng(uint64_t seed) {
    for (uint64_t& word : state_) word = SplitMix64(seed);
  }

  // Next 64 random bits.
  uint64_t Next() {
    const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }

  // Uniform double in [0, 1) from the top 53 bits: exact, identical on every platform.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t SplitMix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  std::array<uint64_t, 4> state_{};
};

}  // namespace tokenmill::sampling

#endif  // TOKENMILL_RUNTIME_SAMPLING_SAMPLING_RNG_H_
