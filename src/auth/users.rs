//! The users file: who may register and call, as HA1 hashes, never passwords.
//!
//! One user per line, fields separated by colons:
//!
//! ```text
//! # user:realm:HA1[:HA1]
//! alice:example.com:5f6f1a2b…(32 hex digits, MD5):9c1e…(64 hex digits, SHA-256)
//! bob:example.com:0d1e…(MD5 only)
//! ```
//!
//! An HA1 of 32 hex digits is `MD5(user:realm:password)`, one of 64 is
//! `SHA-256(user:realm:password)`; a user may have either or both (each algorithm
//! needs its own hash, so a user with only an MD5 hash is offered only MD5). A line
//! with one MD5 hash is exactly what Apache's `htdigest` writes. `#` starts a comment
//! line; blank lines are ignored; spaces around fields are trimmed. The realm must be
//! the configured one (`auth.realm`): the hashes depend on it, and a mismatch would
//! otherwise only show as refused passwords. `sipwake --hash-user USER` prints a line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::digest::ha1;
use crate::config::DigestAlgorithm;

/// Why the users file could not be used. Messages name the file and line, never a
/// hash.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:realm:HA1[:HA1]` or repeats a user.
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One user's hashes, lower-case hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserEntry {
    md5: Option<String>,
    sha256: Option<String>,
}

impl UserEntry {
    /// The HA1 for `alg`, if the file gives one.
    pub fn ha1(&self, alg: DigestAlgorithm) -> Option<&str> {
        match alg {
            DigestAlgorithm::Md5 => self.md5.as_deref(),
            DigestAlgorithm::Sha256 => self.sha256.as_deref(),
        }
    }
}

/// The users file, loaded.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: HashMap<String, UserEntry>,
}

impl Users {
    /// Reads and checks `path` for `realm`.
    pub fn load(path: &Path, realm: &str) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_owned(),
            source,
        })?;
        Users::parse(&text, path, realm)
    }

    /// Parses the text of a users file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path, realm: &str) -> Result<Users, UsersError> {
        let mut users: HashMap<String, UserEntry> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: String| UsersError::Line {
                path: path.to_owned(),
                line,
                reason,
            };
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = l.split(':').map(str::trim).collect();
            if !(3..=4).contains(&fields.len()) {
                return Err(err("expected user:realm:HA1 or user:realm:HA1:HA1".into()));
            }
            let user = fields[0];
            check_user_name(user).map_err(|why| err(why.into()))?;
            if fields[1] != realm {
                return Err(err(format!(
                    "realm {:?} is not the configured realm {realm:?} (auth.realm); \
                     the hashes depend on the realm",
                    fields[1]
                )));
            }
            let mut entry = UserEntry::default();
            for h in &fields[2..] {
                let valid = h.bytes().all(|c| c.is_ascii_hexdigit());
                let slot = match h.len() {
                    32 if valid => &mut entry.md5,
                    64 if valid => &mut entry.sha256,
                    _ => {
                        return Err(err(
                            "an HA1 must be 32 (MD5) or 64 (SHA-256) hex digits".into()
                        ))
                    }
                };
                if slot.is_some() {
                    return Err(err("two hashes of the same length (algorithm)".into()));
                }
                *slot = Some(h.to_ascii_lowercase());
            }
            if let Some(first) = first_line.get(user) {
                return Err(err(format!("user {user:?} is already on line {first}")));
            }
            first_line.insert(user.to_owned(), line);
            users.insert(user.to_owned(), entry);
        }
        Ok(Users { users })
    }

    /// The entry of `user` (case-sensitive, as SIP user parts are).
    pub fn get(&self, user: &str) -> Option<&UserEntry> {
        self.users.get(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True without users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Users that have a hash for none of `algorithms` (they can never log in).
    pub fn unusable<'a>(
        &'a self,
        algorithms: &'a [DigestAlgorithm],
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.users
            .iter()
            .filter(|(_, e)| algorithms.iter().all(|a| e.ha1(*a).is_none()))
            .map(|(u, _)| u.as_str())
    }
}

/// Checks a user name for the users file: not empty, no colon (the field separator),
/// no white space or control characters.
pub fn check_user_name(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        return Err("empty user name");
    }
    if user
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("a user name must not contain colons, spaces or control characters");
    }
    Ok(())
}

/// The users-file line for `user` with both hashes: `user:realm:MD5:SHA-256`.
pub fn line(user: &str, realm: &str, password: &str) -> String {
    format!(
        "{user}:{realm}:{}:{}",
        ha1(DigestAlgorithm::Md5, user, realm, password),
        ha1(DigestAlgorithm::Sha256, user, realm, password)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "939e7578ed9e3c518a452acee763bce9";

    fn parse(text: &str) -> Result<Users, UsersError> {
        Users::parse(text, Path::new("users.txt"), "example.com")
    }

    #[test]
    fn file_format() {
        let l = line("alice", "example.com", "secret");
        let text = format!(
            "# comment\n\n  {l}  \nbob : example.com : {}\ncarol:example.com:{}\n",
            MD5.to_uppercase(),
            "ab".repeat(32)
        );
        let u = parse(&text).unwrap();
        assert_eq!(u.len(), 3);
        let alice = u.get("alice").unwrap();
        assert_eq!(
            alice.ha1(DigestAlgorithm::Md5),
            Some(ha1(DigestAlgorithm::Md5, "alice", "example.com", "secret").as_str())
        );
        assert_eq!(
            alice.ha1(DigestAlgorithm::Sha256),
            Some(ha1(DigestAlgorithm::Sha256, "alice", "example.com", "secret").as_str())
        );
        let bob = u.get("bob").unwrap();
        assert_eq!(bob.ha1(DigestAlgorithm::Md5), Some(MD5));
        assert_eq!(bob.ha1(DigestAlgorithm::Sha256), None);
        assert!(u.get("carol").unwrap().ha1(DigestAlgorithm::Md5).is_none());
        assert!(u.get("Alice").is_none());
        let unusable: Vec<&str> = u.unusable(&[DigestAlgorithm::Sha256]).collect();
        assert_eq!(unusable, vec!["bob"]);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            "alice:example.com".to_owned(),
            format!("alice:other.example:{MD5}"),
            format!("alice:example.com:{}", &MD5[1..]),
            format!("alice:example.com:{MD5}:{MD5}"),
            format!("alice:example.com:{}", "g".repeat(32)),
            format!(":example.com:{MD5}"),
            format!("al ice:example.com:{MD5}"),
            format!("alice:example.com:{MD5}\nalice:example.com:{MD5}"),
            format!("alice:example.com:{MD5}:{}:x", "a".repeat(64)),
        ];
        for text in &cases {
            let text = format!("# users\n{text}");
            let e = parse(&text).expect_err(&text);
            let s = e.to_string();
            assert!(
                s.starts_with("users.txt:2: ") || s.starts_with("users.txt:3: "),
                "{s}"
            );
            assert!(!s.contains(MD5), "no hash in errors: {s}");
        }
        assert!(Users::load(Path::new("/nonexistent/users"), "r")
            .unwrap_err()
            .to_string()
            .starts_with("/nonexistent/users: cannot read"));
    }
}
