#include "net/ws_mask.h"

#include <bit>
#include <cstdint>
#include <cstring>

// The AVX2 path is x86-64 only (chosen at run time); elsewhere, e.g. aarch64, the portable
// loop below does all the work.
#if defined(__x86_64__)
#include <immintrin.h>
#define III_WS_MASK_AVX2 1
#endif

namespace iii::net {

// The key is handled as a 32-bit word whose low byte applies first.
static_assert(std::endian::native == std::endian::little, "ws_mask assumes a little-endian CPU");

namespace {

uint32_t key_word(const MaskKey& key) {
  uint32_t k;
  std::memcpy(&k, key.data(), 4);
  return k;
}

// The key as it applies from byte `i` on: key[i % 4] first (byte order of a little-endian
// load, which the XORs below use).
uint32_t rotated(uint32_t k, size_t i) {
  const unsigned r = 8 * static_cast<unsigned>(i & 3);
  return r ? (k >> r) | (k << (32 - r)) : k;
}

// Bytes [i, n) one at a time; `k` is the key from byte 0.
void mask_bytes(char* dst, const char* src, size_t i, size_t n, uint32_t k) {
  for (; i < n; ++i) dst[i] = static_cast<char>(src[i] ^ static_cast<char>(k >> (8 * (i & 3))));
}

// Portable: 8 bytes at a time (GCC vectorises it with SSE2 at -O3).
void mask_words(char* dst, const char* src, size_t n, uint32_t k) {
  const uint64_t k8 = (static_cast<uint64_t>(k) << 32) | k;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, src + i, 8);
    v ^= k8;
    std::memcpy(dst + i, &v, 8);
  }
  mask_bytes(dst, src, i, n, k);
}

#ifdef III_WS_MASK_AVX2
// AVX2: bytes one at a time until `dst` is 32-byte aligned, then aligned 32-byte stores, four
// per iteration (unaligned stores, which is what the compiler emits, cost twice as much).
__attribute__((target("avx2"))) void mask_avx2(char* dst, const char* src, size_t n, uint32_t k) {
  size_t i = 0;
  while (i < n && (reinterpret_cast<uintptr_t>(dst + i) & 31) != 0) ++i;
  mask_bytes(dst, src, 0, i, k);
  const __m256i kv = _mm256_set1_epi32(static_cast<int>(rotated(k, i)));
  for (; i + 128 <= n; i += 128) {
    const auto* s = reinterpret_cast<const __m256i*>(src + i);
    auto* d = reinterpret_cast<__m256i*>(dst + i);
    const __m256i a = _mm256_loadu_si256(s), b = _mm256_loadu_si256(s + 1);
    const __m256i c = _mm256_loadu_si256(s + 2), e = _mm256_loadu_si256(s + 3);
    _mm256_store_si256(d, _mm256_xor_si256(a, kv));
    _mm256_store_si256(d + 1, _mm256_xor_si256(b, kv));
    _mm256_store_si256(d + 2, _mm256_xor_si256(c, kv));
    _mm256_store_si256(d + 3, _mm256_xor_si256(e, kv));
  }
  for (; i + 32 <= n; i += 32) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm256_store_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_xor_si256(a, kv));
  }
  mask_bytes(dst, src, i, n, k);
}

bool have_avx2() {
  static const bool yes = (__builtin_cpu_init(), __builtin_cpu_supports("avx2"));
  return yes;
}
#endif  // III_WS_MASK_AVX2

void mask(char* dst, const char* src, size_t n, uint32_t k) {
#ifdef III_WS_MASK_AVX2
  if (n >= 64 && have_avx2()) return mask_avx2(dst, src, n, k);
#endif
  mask_words(dst, src, n, k);
}

}  // namespace

void mask_inplace(char* p, size_t n, MaskKey& key) {
  const uint32_t k = key_word(key);
  mask(p, p, n, k);
  const uint32_t next = rotated(k, n);
  std::memcpy(key.data(), &next, 4);
}

void mask_copy(char* dst, const char* src, size_t n, const MaskKey& key) {
  mask(dst, src, n, key_word(key));
}

void detail::mask_copy_portable(char* dst, const char* src, size_t n, const MaskKey& key) {
  mask_words(dst, src, n, key_word(key));
}

}  // namespace iii::net
