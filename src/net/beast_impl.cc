// Beast's non-template code (frame masking, UTF-8 validation, SHA-1 for the handshake, HTTP
// parser tables), compiled once for the whole program instead of inline in every file that
// includes Beast: BOOST_BEAST_SEPARATE_COMPILATION is defined project-wide in CMakeLists.txt.
//
// This file is built at -O3 (see sdk/cpp/CMakeLists.txt) because that lets GCC vectorise
// websocket::detail::mask_inplace, the byte loop that unmasks every client frame. At -O2 it
// ran one byte at a time and was a third of the engine's CPU on a channel transfer.
#include <boost/beast/src.hpp>
