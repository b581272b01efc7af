//! MNIST in the IDX format (LeCun et al.): `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally gzip-compressed.
//!
//! An IDX file is a big-endian header — magic `00 00 TT DD` (TT = element type, 0x08 = unsigned byte;
//! DD = number of dimensions), then DD u32 sizes — followed by exactly the product of the sizes in
//! elements. Gzip is recognised by the `1f 8b` magic bytes, not by the file name. The reader checks the
//! magic, the header length, that the payload is exactly as long as the header says (short files and
//! trailing bytes are both errors) and the gzip stream's integrity, and refuses headers that claim more
//! than 2^31 elements, so a damaged file cannot make it allocate without bound.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// Which half of MNIST to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// 60 000 training examples (`train-*`).
    Train,
    /// 10 000 test examples (`t10k-*`).
    Test,
}

impl Split {
    /// The file-name prefix MNIST uses for this split.
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// One loaded split: `images` holds `len()` images of `rows × cols` bytes each, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MnistSplit {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl MnistSplit {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of example `i` (`rows × cols` bytes, row-major).
    pub fn image(&self, i: usize) -> &[u8] {
        let sz = self.rows * self.cols;
        &self.images[i * sz..(i + 1) * sz]
    }
}

/// The largest number of elements we accept from an IDX header (2^31).
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// The environment variable naming the MNIST directory.
pub const MNIST_DIR_ENV: &str = "MTCOOL_MNIST_DIR";

/// Where to look for MNIST when no directory is given: `$MTCOOL_MNIST_DIR` if set, else
/// `../shared/data/mnist` relative to the current directory if it exists, else the same path relative
/// to the crate's source directory at build time.
pub fn default_mnist_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(MNIST_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let rel = PathBuf::from("../shared/data/mnist");
    if rel.is_dir() {
        return rel;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist")
}

/// Reads an IDX3 unsigned-byte file: returns (pixels, n, rows, cols).
pub fn read_idx_images(path: &Path) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    let (data, dims) = read_idx(path, 3)?;
    Ok((data, dims[0], dims[1], dims[2]))
}

/// Reads an IDX1 unsigned-byte file: returns the labels.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    Ok(read_idx(path, 1)?.0)
}

/// Parses IDX3 unsigned-byte bytes (raw or gzip) as `read_idx_images` does a file: (pixels, n, rows, cols).
pub fn parse_idx_images(bytes: &[u8]) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    let (data, dims) = read_idx_from(Path::new("<bytes>"), std::io::Cursor::new(bytes), 3)?;
    Ok((data, dims[0], dims[1], dims[2]))
}

/// Parses IDX1 unsigned-byte bytes (raw or gzip) as `read_idx_labels` does a file.
pub fn parse_idx_labels(bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    Ok(read_idx_from(Path::new("<bytes>"), std::io::Cursor::new(bytes), 1)?.0)
}

/// Loads one split from `dir`, accepting each file with or without `.gz`, and checks that it looks like
/// MNIST: 28×28 images, labels 0..=9, as many labels as images.
pub fn load_mnist(dir: &Path, split: Split) -> Result<MnistSplit, DataError> {
    let img_path = find_file(dir, &format!("{}-images-idx3-ubyte", split.prefix()))?;
    let lbl_path = find_file(dir, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
    let (images, n, rows, cols) = read_idx_images(&img_path)?;
    if (rows, cols) != (28, 28) {
        return Err(DataError::Format {
            path: img_path,
            msg: format!("images are {rows}x{cols}, MNIST images must be 28x28"),
        });
    }
    let labels = read_idx_labels(&lbl_path)?;
    if labels.len() != n {
        return Err(DataError::CountMismatch {
            images: img_path,
            labels: lbl_path,
            n_images: n,
            n_labels: labels.len(),
        });
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(DataError::Format { path: lbl_path, msg: format!("label {l} at index {i} is not a digit 0..=9") });
    }
    Ok(MnistSplit { images, labels, rows, cols })
}

/// `dir/name` if it exists, else `dir/name.gz` if that exists, else a not-found error.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::NotFound { path: raw })
}

/// Reads up to `n` bytes, stopping early only at end of input.
fn read_upto(r: &mut impl Read, n: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    r.take(n).read_to_end(buf).map(|_| ())
}

/// Reads an unsigned-byte IDX file with `ndims` dimensions: (data, sizes).
fn read_idx(path: &Path, ndims: u8) -> Result<(Vec<u8>, Vec<usize>), DataError> {
    let file = File::open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound { path: path.to_path_buf() }
        } else {
            DataError::Io { path: path.to_path_buf(), err }
        }
    })?;
    read_idx_from(path, file, ndims)
}

/// `read_idx` on an open `file` (messages name `path`).
fn read_idx_from<'a, R: Read + Seek + 'a>(
    path: &Path,
    mut file: R,
    ndims: u8,
) -> Result<(Vec<u8>, Vec<usize>), DataError> {
    let io_err = |err| DataError::Io { path: path.to_path_buf(), err };
    let fmt = |msg: String| DataError::Format { path: path.to_path_buf(), msg };
    let mut head = Vec::with_capacity(2);
    read_upto(&mut file, 2, &mut head).map_err(io_err)?;
    file.rewind().map_err(io_err)?;
    let gzip = head == [0x1f, 0x8b];
    let mut reader: Box<dyn Read + 'a> =
        if gzip { Box::new(MultiGzDecoder::new(BufReader::new(file))) } else { Box::new(BufReader::new(file)) };
    // Errors from the reader: a decoder failure means a corrupt gzip stream.
    let read_err = |err: std::io::Error| {
        if gzip {
            DataError::Gzip { path: path.to_path_buf(), err }
        } else {
            DataError::Io { path: path.to_path_buf(), err }
        }
    };
    let what = if gzip { " (after gunzip)" } else { "" };

    // Magic.
    let mut magic = Vec::with_capacity(4);
    read_upto(&mut reader, 4, &mut magic).map_err(read_err)?;
    if magic.len() < 4 {
        return Err(fmt(format!("truncated IDX header: {} bytes{what}, need at least 4", magic.len())));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(fmt(format!(
            "bad IDX magic {:02x} {:02x} {:02x} {:02x}: not an IDX file (expected 00 00 08 {ndims:02x})",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    if magic[2] != 0x08 {
        return Err(fmt(format!(
            "IDX element type 0x{:02x} is not supported (expected 0x08, unsigned byte)",
            magic[2]
        )));
    }
    if magic[3] != ndims {
        let kind = if ndims == 3 { "an images file" } else { "a labels file" };
        return Err(fmt(format!("IDX file has {} dimensions, expected {ndims} ({kind})", magic[3])));
    }

    // Sizes.
    let mut sizes_raw = Vec::with_capacity(4 * ndims as usize);
    read_upto(&mut reader, 4 * ndims as u64, &mut sizes_raw).map_err(read_err)?;
    if sizes_raw.len() < 4 * ndims as usize {
        return Err(fmt(format!(
            "truncated IDX header: {} bytes{what}, need {}",
            4 + sizes_raw.len(),
            4 + 4 * ndims as usize
        )));
    }
    let dims: Vec<u64> =
        sizes_raw.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64).collect();
    let total = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d).filter(|&t| t <= MAX_ELEMENTS));
    let Some(total) = total else {
        return Err(fmt(format!("IDX header claims sizes {dims:?}, more than the 2^31 elements we accept")));
    };

    // Payload: exactly `total` bytes, nothing after it.
    let mut data = Vec::with_capacity(total.min(1 << 26) as usize);
    read_upto(&mut reader, total, &mut data).map_err(read_err)?;
    if (data.len() as u64) < total {
        return Err(fmt(format!(
            "truncated IDX payload: header {dims:?} needs {total} bytes, file has {}{what}",
            data.len()
        )));
    }
    let mut extra = Vec::with_capacity(1);
    read_upto(&mut reader, 1, &mut extra).map_err(read_err)?;
    if !extra.is_empty() {
        return Err(fmt(format!("trailing bytes after the {total}-byte IDX payload{what}")));
    }
    Ok((data, dims.into_iter().map(|d| d as usize).collect()))
}
