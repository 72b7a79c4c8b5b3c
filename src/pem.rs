//! PEM files: reading a certificate chain or a private key, with errors that name the file.

use std::io;
use std::path::{Path, PathBuf};

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file gave no certificate or key; `Display` is the message for the user.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: no {what} found in the PEM file")]
    Empty { what: &'static str, path: PathBuf },
}

/// The certificates of the PEM file at `path`: at least one, in file order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let read = |source| PemError::Read {
        what: "certificate file",
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            what: "certificate",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of the PEM file at `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let read = |source| PemError::Read {
        what: "private key file",
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    rustls_pemfile::private_key(&mut io::BufReader::new(file))
        .map_err(read)?
        .ok_or_else(|| PemError::Empty {
            what: "private key",
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_pem_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        assert!(matches!(load_certs(&missing), Err(PemError::Read { .. })));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        assert!(matches!(load_certs(&empty), Err(PemError::Empty { .. })));
        assert!(matches!(load_key(&empty), Err(PemError::Empty { .. })));
    }
}
