// A small reader of fuzzer bytes as typed values (what clang's FuzzedDataProvider does, without
// needing clang's headers: the replay tests build with gcc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace mq::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  template <typename T>
  T Take() {
    T v{};
    const size_t n = size_ < sizeof(T) ? size_ : sizeof(T);
    std::memcpy(&v, data_, n);
    data_ += n;
    size_ -= n;
    return v;
  }
  bool TakeBool() { return Take<uint8_t>() & 1; }
  // A string of at most `max` bytes: a length byte, then the bytes.
  std::string TakeString(size_t max) {
    size_t n = Take<uint8_t>();
    if (n > max) n = max;
    if (n > size_) n = size_;
    std::string s(reinterpret_cast<const char*>(data_), n);
    data_ += n;
    size_ -= n;
    return s;
  }
  std::string_view Rest() const { return {reinterpret_cast<const char*>(data_), size_}; }
  size_t remaining() const { return size_; }

 private:
  const uint8_t* data_;
  size_t size_;
};

}  // namespace mq::fuzz
