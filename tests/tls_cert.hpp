#pragma once

// A throwaway self-signed certificate for tests that speak HTTPS (the
// edge's unit tests and the integration tests), made with OpenSSL's API so
// no `openssl` binary is needed.

#include <cstdio>
#include <stdexcept>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace troupe::test {

/// Writes an EC P-256 key and a certificate for CN=127.0.0.1 with `serial`
/// (valid from an hour ago for a day) as PEM files; throws on failure.
inline void make_cert(const std::string& cert_path,
                      const std::string& key_path, long serial) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr)
    throw std::runtime_error("EVP_EC_gen failed");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(
    name, "CN", MBSTRING_ASC,
    reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  bool ok = X509_sign(x, key, EVP_sha256()) > 0;
  if (ok) {
    // Written to a temporary name and renamed, so a reader never sees half.
    auto write = [](const std::string& path, auto&& fn) {
      auto tmp = path + ".tmp";
      FILE* f = std::fopen(tmp.c_str(), "w");
      if (f == nullptr)
        return false;
      bool written = fn(f);
      std::fclose(f);
      return written && std::rename(tmp.c_str(), path.c_str()) == 0;
    };
    ok = write(cert_path, [&](FILE* f) { return PEM_write_X509(f, x) == 1; })
         && write(key_path, [&](FILE* f) {
              return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0,
                                          nullptr, nullptr)
                     == 1;
            });
  }
  X509_free(x);
  EVP_PKEY_free(key);
  if (!ok)
    throw std::runtime_error("cannot write a test certificate");
}

} // namespace troupe::test
