// Boost.JSON's compiled part, built from source with the fuzz instrumentation (see
// CMakeLists.txt) instead of linking Debian's uninstrumented libboost_json.
#include <boost/json/src.hpp>
