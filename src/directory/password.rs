//! Password hashes: Argon2id for new ones; {SSHA}, {CRYPT}$6$ and {ARGON2}
//! as found in existing LDAP directories verify too.
