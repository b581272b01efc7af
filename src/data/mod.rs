//! Datasets: readers for on-disk data and the derived training sets built from them.
//!
//! * [`mnist`] — the MNIST IDX files (raw or gzip), strictly validated: every malformed input is an
//!   error naming the file, never a panic, and a corrupt header cannot make us allocate more than 2 GiB.
//! * [`multimnist`] — MultiMNIST (Sener & Koltun, 2018): two MNIST digits overlaid on one 28×28 image,
//!   one label per digit, the standard two-task benchmark.
//!
//! Everything fallible returns [`DataError`], whose `Display` is a single line that starts with the file
//! it is about.

pub mod folder;
pub mod fundus;
pub mod hrf_av;
pub mod mnist;
pub mod multimnist;
pub mod refuge;

use std::path::PathBuf;

/// Everything that can go wrong while loading a dataset. Each message is one line that names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A dataset file is not where we looked.
    #[error(
        "{}: MNIST file not found (looked for it with and without .gz); point at the MNIST directory \
         with --data DIR or the MTCOOL_MNIST_DIR environment variable",
        .path.display()
    )]
    NotFound { path: PathBuf },
    /// The file exists but could not be opened or read.
    #[error("{}: cannot read: {err}", .path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// The file starts like gzip but its compressed stream is damaged.
    #[error("{}: damaged gzip data: {err}", .path.display())]
    Gzip { path: PathBuf, err: std::io::Error },
    /// The file is readable but its contents are not what the format requires.
    #[error("{}: {msg}", .path.display())]
    Format { path: PathBuf, msg: String },
    /// An images file and its labels file disagree on the number of examples.
    #[error(
        "{}: has {n_images} images but {} has {n_labels} labels",
        .images.display(),
        .labels.display()
    )]
    CountMismatch { images: PathBuf, labels: PathBuf, n_images: usize, n_labels: usize },
}
