#include "storage/crypto.hpp"

#include <cstring>
#include <vector>

#include <sodium.h>

namespace troupe::storage::crypto {

bool init() {
  static const bool ok = sodium_init() >= 0;
  return ok;
}

std::string hash_password(const std::string& password) {
  init();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(out, password.data(), password.size(),
                        crypto_pwhash_OPSLIMIT_INTERACTIVE,
                        crypto_pwhash_MEMLIMIT_INTERACTIVE)
      != 0)
    return {}; // out of memory: an empty hash never verifies
  return out;
}

bool verify_password(const std::string& hash, const std::string& password) {
  init();
  if (hash.empty() || hash.size() >= crypto_pwhash_STRBYTES)
    return false;
  return crypto_pwhash_str_verify(hash.c_str(), password.data(),
                                  password.size())
         == 0;
}

std::string random_token(size_t bytes) {
  init();
  std::vector<unsigned char> buf(bytes);
  randombytes_buf(buf.data(), buf.size());
  std::string out(sodium_base64_ENCODED_LEN(bytes,
                                            sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                  '\0');
  sodium_bin2base64(out.data(), out.size(), buf.data(), buf.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::string keyed_hash(const std::string& key_hex, const std::string& data) {
  init();
  unsigned char key[crypto_generichash_KEYBYTES_MAX];
  size_t key_len = 0;
  sodium_hex2bin(key, sizeof(key), key_hex.data(), key_hex.size(), nullptr,
                 &key_len, nullptr);
  unsigned char out[32];
  crypto_generichash(out, sizeof(out),
                     reinterpret_cast<const unsigned char*>(data.data()),
                     data.size(), key_len ? key : nullptr, key_len);
  char hex[65];
  sodium_bin2hex(hex, sizeof(hex), out, sizeof(out));
  return hex;
}

bool equal_constant_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size())
    return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace troupe::storage::crypto
