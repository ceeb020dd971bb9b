//! The pod's projected service-account token, sent to the agent as
//! `Authorization: Bearer <token>` so that it can tell which namespace and
//! service account the caller runs as (uid and gid say nothing in a
//! cluster).
//!
//! The file is read again for every request. The kubelet renews it well
//! before it expires (at 80 % of its life) by swapping the volume's
//! `..data` symlink, so the path's inode changes while its own mtime may
//! not, and a renewal within the same second as the last read would slip
//! past an mtime check. Reading a small file from a tmpfs costs
//! microseconds, less than any check that could be wrong, and is done
//! only when the agent is asked, not for tokens [`crate::Client::with_cache`]
//! hands out again.

use std::io::{Error as IoError, ErrorKind};
use std::path::{Path, PathBuf};

use hyper::header::HeaderValue;

use crate::Error;

/// Where the token is read from, and whether its absence is an error.
#[derive(Debug, Clone)]
pub(crate) struct TokenFile {
    path: PathBuf,
    /// Named by the caller: missing is an error. The default path is used
    /// only while it exists, so that the same code runs outside a cluster.
    required: bool,
}

impl TokenFile {
    /// The default, [`crate::DEFAULT_KUBERNETES_TOKEN_FILE`], sent when it exists.
    pub(crate) fn default_path() -> TokenFile {
        TokenFile {
            path: crate::DEFAULT_KUBERNETES_TOKEN_FILE.into(),
            required: false,
        }
    }

    /// `path`, which must exist when a request is made.
    pub(crate) fn required(path: PathBuf) -> TokenFile {
        TokenFile {
            path,
            required: true,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The `Authorization` header for the token the file holds now; `None`
    /// when the default file does not exist. Marked sensitive, and never
    /// part of an error message.
    pub(crate) fn authorization(&self) -> Result<Option<HeaderValue>, Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Err(e) if e.kind() == ErrorKind::NotFound && !self.required => return Ok(None),
            Err(source) => return Err(self.unusable(source)),
            Ok(text) => text,
        };
        let token = text.trim();
        if token.is_empty() {
            return Err(self.unusable(IoError::new(ErrorKind::InvalidData, "the file is empty")));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            self.unusable(IoError::new(
                ErrorKind::InvalidData,
                "it holds characters no token has",
            ))
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    fn unusable(&self, source: IoError) -> Error {
        Error::KubernetesToken {
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_for_each_header_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let file = TokenFile::required(path.clone());
        std::fs::write(&path, "eyJ.first.sig\n").unwrap();
        let first = file.authorization().unwrap().unwrap();
        assert_eq!(first.to_str().unwrap(), "Bearer eyJ.first.sig");
        assert!(first.is_sensitive());
        std::fs::write(&path, "eyJ.renewed.sig").unwrap();
        let renewed = file.authorization().unwrap().unwrap();
        assert_eq!(renewed.to_str().unwrap(), "Bearer eyJ.renewed.sig");
    }

    #[test]
    fn a_missing_default_means_no_header_a_missing_named_file_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("token");
        let default = TokenFile {
            path: absent.clone(),
            required: false,
        };
        assert!(default.authorization().unwrap().is_none());
        let named = TokenFile::required(absent.clone()).authorization();
        let error = named.unwrap_err().to_string();
        assert!(error.contains(absent.to_str().unwrap()), "{error}");
    }

    #[test]
    fn unusable_content_is_an_error_that_does_not_repeat_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        for content in ["", " \n", "secret\x01part"] {
            std::fs::write(&path, content).unwrap();
            let error = TokenFile::required(path.clone()).authorization();
            let message = error.unwrap_err().to_string();
            assert!(!message.contains("secret"), "{message}");
            assert!(message.contains("token"), "{message}");
        }
    }
}
