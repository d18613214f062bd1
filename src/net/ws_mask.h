// WebSocket payload masking (RFC 6455 §5.3): every byte XORed with the 4-byte masking key,
// repeating. The engine unmasks every byte a channel writer sends and the C++ SDK masks every
// byte it sends, so this runs over all channel data twice: with AVX2 (x86-64 only, checked
// once at run time) it goes about twice as fast as Beast's mask_inplace, which GCC vectorises
// to SSE2 with unaligned stores (35 against 18 GB/s on this machine's cached data;
// docs/performance.md).
#pragma once

#include <array>
#include <cstddef>

namespace iii::net {

using MaskKey = std::array<unsigned char, 4>;

// XORs [p, p + n) with `key` in place, then rotates `key` by n so that the next call goes on
// where this one stopped (a frame's payload can be unmasked in pieces).
void mask_inplace(char* p, size_t n, MaskKey& key);

// dst[i] = src[i] ^ key[i % 4] for i < n (a whole payload: the key starts at its first byte).
void mask_copy(char* dst, const char* src, size_t n, const MaskKey& key);

namespace detail {
// mask_copy without AVX2, as on a CPU that lacks it (for the tests).
void mask_copy_portable(char* dst, const char* src, size_t n, const MaskKey& key);
}  // namespace detail

}  // namespace iii::net
