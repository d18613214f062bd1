// Masking against a byte-by-byte reference: every length up to a few vector widths, every
// alignment of source and destination, in place and copied, and a payload unmasked in pieces
// with the key carried from one piece to the next.
#include "net/ws_mask.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iii::net {
namespace {

std::string reference(const std::string& in, const MaskKey& key, size_t start = 0) {
  std::string out = in;
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(in[i] ^ key[(start + i) % 4]);
  return out;
}

std::string bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 131 + 7);
  return s;
}

const MaskKey kKey = {0x9d, 0x01, 0x7e, 0xe3};

TEST(WsMask, MatchesTheReferenceAtEveryLengthAndAlignment) {
  std::vector<char> src(400 + 64), dst(400 + 64);
  for (size_t n = 0; n <= 400; n += (n < 140 ? 1 : 37)) {
    const std::string in = bytes(n);
    const std::string want = reference(in, kKey);
    for (size_t so = 0; so < 33; ++so) {
      for (size_t d = 0; d < 33; ++d) {
        std::copy(in.begin(), in.end(), src.begin() + so);
        mask_copy(dst.data() + d, src.data() + so, n, kKey);
        ASSERT_EQ(std::string(dst.data() + d, n), want) << n << " " << so << " " << d;
        detail::mask_copy_portable(dst.data() + d, src.data() + so, n, kKey);
        ASSERT_EQ(std::string(dst.data() + d, n), want) << "portable " << n << " " << so;
      }
    }
    for (size_t o = 0; o < 33; ++o) {
      std::copy(in.begin(), in.end(), src.begin() + o);
      MaskKey key = kKey;
      mask_inplace(src.data() + o, n, key);
      ASSERT_EQ(std::string(src.data() + o, n), want) << n << " " << o;
    }
  }
}

TEST(WsMask, InPlaceCarriesTheKeyAcrossPieces) {
  const std::string in = bytes(100000);
  const std::string want = reference(in, kKey);
  for (size_t piece : {1, 3, 63, 64, 65, 4097}) {
    std::string buf = in;
    MaskKey key = kKey;
    for (size_t at = 0; at < buf.size(); at += piece)
      mask_inplace(buf.data() + at, std::min(piece, buf.size() - at), key);
    ASSERT_EQ(buf, want) << piece;
  }
  // Masking twice with the same key gives the input back.
  std::string buf = want;
  MaskKey key = kKey;
  mask_inplace(buf.data(), buf.size(), key);
  EXPECT_EQ(buf, in);
}

}  // namespace
}  // namespace iii::net
