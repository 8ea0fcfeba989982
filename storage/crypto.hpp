#pragma once

#include <string>

/// Credentials: slow salted password hashes, fast keyed hashes for long
/// random secrets and tokens, constant-time comparison. libsodium only.
namespace troupe::storage::crypto {

/// Initializes libsodium; safe to call many times. False if it fails.
bool init();

/// argon2id hash in libsodium's string format (salt and parameters inside).
/// Uses the "interactive" limits (about 64 MiB and tens of ms).
std::string hash_password(const std::string& password);

/// True if `password` matches `hash` (from hash_password). Constant time.
bool verify_password(const std::string& hash, const std::string& password);

/// `bytes` random bytes, base64url without padding (32 -> 43 characters).
std::string random_token(size_t bytes = 32);

/// BLAKE2b-256 keyed with `key_hex`, returned as lowercase hex. For values
/// that are already long random strings (device secrets, tokens).
std::string keyed_hash(const std::string& key_hex, const std::string& data);

/// Compares two strings in time independent of where they differ.
bool equal_constant_time(const std::string& a, const std::string& b);

} // namespace troupe::storage::crypto
