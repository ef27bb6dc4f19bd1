//! The engine's one error type.
//!
//! Every request-level failure is an [`EngineError`] variant carrying its
//! context (path, task, option, work item); it becomes a `tonic::Status` in
//! exactly one place, the `From` impl below, so status codes are chosen at the
//! gRPC boundary and nowhere else. Per-file failures are not errors of the
//! request: they are data ([`crate::results::FileFailure`]) streamed back.
use std::path::PathBuf;

use crate::results::FailureKind;

/// A failure of a whole request (or of one work item).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("source does not exist: {}", path.display())]
    SourceNotFound { path: PathBuf },
    #[error("source is not a directory: {} (give the directory to walk)", path.display())]
    SourceNotDirectory { path: PathBuf },
    #[error("unknown task {name:?}; known tasks: {known}")]
    UnknownTask { name: String, known: String },
    #[error("invalid options for task {task:?}: {message}")]
    BadOptions { task: String, message: String },
    #[error("invalid work item id {id:?}: use 1-64 characters from [A-Za-z0-9._-]")]
    BadWorkId { id: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{} is outside the engine's allowed roots (PRAVAH_ALLOWED_ROOTS)", path.display())]
    OutsideAllowedRoots { path: PathBuf },
    #[error("bucket {bucket:?} is not in the engine's allowed buckets (PRAVAH_ALLOWED_BUCKETS)")]
    BucketNotAllowed { bucket: String },
    /// An object store request failed for the whole request (listing a
    /// prefix, reaching the endpoint); `kind` picks the status code.
    #[error("{message}")]
    Storage {
        kind: crate::results::FailureKind,
        message: String,
    },
    #[error("{context}: {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

impl From<EngineError> for tonic::Status {
    fn from(err: EngineError) -> Self {
        let message = err.to_string();
        match err {
            EngineError::SourceNotFound { .. } => tonic::Status::not_found(message),
            EngineError::SourceNotDirectory { .. }
            | EngineError::UnknownTask { .. }
            | EngineError::BadOptions { .. }
            | EngineError::BadWorkId { .. }
            | EngineError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            EngineError::OutsideAllowedRoots { .. } | EngineError::BucketNotAllowed { .. } => {
                tonic::Status::permission_denied(message)
            }
            EngineError::Storage { kind, .. } => match kind {
                FailureKind::NotFound => tonic::Status::not_found(message),
                FailureKind::PermissionDenied => tonic::Status::permission_denied(message),
                FailureKind::InvalidData | FailureKind::OutsideRoot => {
                    tonic::Status::invalid_argument(message)
                }
                _ => tonic::Status::unavailable(message),
            },
            EngineError::Io { ref source, .. } => {
                use std::io::ErrorKind as K;
                match source.kind() {
                    K::NotFound => tonic::Status::not_found(message),
                    K::PermissionDenied => tonic::Status::permission_denied(message),
                    // A path the call names cannot serve as asked (a file
                    // where a folder must be, a read-only or full file
                    // system): the same call again would fail again, so a
                    // client must not retry it as it would an internal error.
                    K::AlreadyExists
                    | K::NotADirectory
                    | K::IsADirectory
                    | K::ReadOnlyFilesystem
                    | K::StorageFull
                    | K::InvalidFilename
                    | K::InvalidInput => tonic::Status::failed_precondition(message),
                    _ => tonic::Status::internal(message),
                }
            }
            EngineError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(kind: std::io::ErrorKind) -> tonic::Code {
        tonic::Status::from(EngineError::io(
            "cannot create destination",
            "/x",
            std::io::Error::from(kind),
        ))
        .code()
    }

    /// A client retries `internal` and `unavailable`; a destination that is
    /// a file, or a read-only or full file system, would only fail again.
    #[test]
    fn a_path_that_cannot_serve_is_a_failed_precondition_not_an_internal_error() {
        use std::io::ErrorKind as K;
        for kind in [
            K::AlreadyExists,
            K::NotADirectory,
            K::ReadOnlyFilesystem,
            K::StorageFull,
        ] {
            assert_eq!(code_of(kind), tonic::Code::FailedPrecondition, "{kind:?}");
        }
        assert_eq!(code_of(K::NotFound), tonic::Code::NotFound);
        assert_eq!(code_of(K::PermissionDenied), tonic::Code::PermissionDenied);
        assert_eq!(code_of(K::Interrupted), tonic::Code::Internal);
    }
}
