//! MNIST IDX reader: round-trips on files written here (raw and gzip), one error per kind of damage,
//! and — when the real dataset is present — a sanity check of both splits.

mod common;

use common::real_mnist_dir;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use mtcool::data::mnist::{load_mnist, read_idx_images, read_idx_labels, Split};
use mtcool::data::DataError;

/// An IDX file: magic `00 00 08 ndims`, big-endian sizes, payload.
fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `n` deterministic 28×28 images and labels.
fn sample(n: usize) -> (Vec<u8>, Vec<u8>) {
    let images = (0..n * 784).map(|k| (k * 31 % 256) as u8).collect();
    let labels = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    (images, labels)
}

fn images_file(images: &[u8], n: usize) -> Vec<u8> {
    idx(&[n as u32, 28, 28], images)
}

fn labels_file(labels: &[u8]) -> Vec<u8> {
    idx(&[labels.len() as u32], labels)
}

/// The error's one-line message; checks that it names `file` and contains `needle`.
fn expect_err<T: std::fmt::Debug>(r: Result<T, DataError>, file: &str, needle: &str) -> String {
    let msg = r.expect_err("expected an error").to_string();
    assert!(msg.contains(file), "message should name {file}: {msg}");
    assert!(msg.contains(needle), "message should mention {needle:?}: {msg}");
    assert!(!msg.contains('\n'), "message should be one line: {msg}");
    eprintln!("ok, error: {msg}");
    msg
}

#[test]
fn roundtrip_raw_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sample(5);
    // A non-square shape, to check rows/cols come back in order.
    let odd: Vec<u8> = (0..3 * 4 * 6).map(|k| k as u8).collect();
    for (suffix, enc) in [("", false), (".gz", true)] {
        let f = |b: Vec<u8>| if enc { gz(&b) } else { b };
        let pi = write(dir.path(), &format!("img{suffix}"), &f(images_file(&images, 5)));
        let pl = write(dir.path(), &format!("lbl{suffix}"), &f(labels_file(&labels)));
        let po = write(dir.path(), &format!("odd{suffix}"), &f(idx(&[3, 4, 6], &odd)));
        assert_eq!(read_idx_images(&pi).unwrap(), (images.clone(), 5, 28, 28));
        assert_eq!(read_idx_labels(&pl).unwrap(), labels);
        assert_eq!(read_idx_images(&po).unwrap(), (odd.clone(), 3, 4, 6));
    }
    // Gzip is detected by content, not by name: a gzip file without .gz and a raw one named .gz.
    let p = write(dir.path(), "gzip-without-suffix", &gz(&labels_file(&labels)));
    assert_eq!(read_idx_labels(&p).unwrap(), labels);
    let p = write(dir.path(), "raw-with-suffix.gz", &labels_file(&labels));
    assert_eq!(read_idx_labels(&p).unwrap(), labels);
    // Empty files are fine when the header says so.
    let p = write(dir.path(), "empty-labels", &labels_file(&[]));
    assert_eq!(read_idx_labels(&p).unwrap(), Vec::<u8>::new());
}

#[test]
fn load_mnist_raw_gz_and_mixed() {
    let (images, labels) = sample(4);
    let (timages, tlabels) = sample(2);
    // All raw, all gzip, and a mix.
    for (img_gz, lbl_gz) in [(false, false), (true, true), (true, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, bytes: Vec<u8>, z: bool| {
            if z {
                write(dir.path(), &format!("{name}.gz"), &gz(&bytes));
            } else {
                write(dir.path(), name, &bytes);
            }
        };
        put("train-images-idx3-ubyte", images_file(&images, 4), img_gz);
        put("train-labels-idx1-ubyte", labels_file(&labels), lbl_gz);
        put("t10k-images-idx3-ubyte", images_file(&timages, 2), img_gz);
        put("t10k-labels-idx1-ubyte", labels_file(&tlabels), lbl_gz);
        let tr = load_mnist(dir.path(), Split::Train).unwrap();
        assert_eq!((tr.len(), tr.rows, tr.cols), (4, 28, 28));
        assert_eq!(tr.images, images);
        assert_eq!(tr.labels, labels);
        assert_eq!(tr.image(3), &images[3 * 784..4 * 784]);
        let te = load_mnist(dir.path(), Split::Test).unwrap();
        assert_eq!((te.len(), te.images, te.labels), (2, timages.clone(), tlabels.clone()));
    }
}

#[test]
fn corrupt_inputs_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (images, labels) = sample(3);
    let good_img = images_file(&images, 3);
    let good_lbl = labels_file(&labels);

    // 1. Bad magic (not starting 00 00).
    let mut b = good_img.clone();
    b[0] = 0x12;
    let p = write(d, "bad-magic", &b);
    expect_err(read_idx_images(&p), "bad-magic", "magic");
    // 2. Wrong element type (0x09 = signed byte).
    let mut b = good_img.clone();
    b[2] = 0x09;
    let p = write(d, "bad-type", &b);
    expect_err(read_idx_images(&p), "bad-type", "element type");
    // 3. Wrong dimension count: a labels file read as images, and vice versa.
    let p = write(d, "labels-as-images", &good_lbl);
    expect_err(read_idx_images(&p), "labels-as-images", "dimensions");
    let p = write(d, "images-as-labels", &good_img);
    expect_err(read_idx_labels(&p), "images-as-labels", "dimensions");
    // 4. Truncated header (magic fine, sizes cut), raw and gzip; and a file too short for the magic.
    let p = write(d, "short-header", &good_img[..10]);
    expect_err(read_idx_images(&p), "short-header", "truncated IDX header");
    let p = write(d, "short-header-gz", &gz(&good_img[..10]));
    expect_err(read_idx_images(&p), "short-header-gz", "truncated IDX header");
    let p = write(d, "three-bytes", &good_img[..3]);
    expect_err(read_idx_images(&p), "three-bytes", "truncated IDX header");
    let p = write(d, "empty-file", &[]);
    expect_err(read_idx_labels(&p), "empty-file", "truncated IDX header");
    // 5. Truncated payload, raw and gzip.
    let p = write(d, "short-payload", &good_img[..good_img.len() - 1]);
    expect_err(read_idx_images(&p), "short-payload", "truncated IDX payload");
    let p = write(d, "short-payload-gz", &gz(&good_lbl[..good_lbl.len() - 1]));
    expect_err(read_idx_labels(&p), "short-payload-gz", "truncated IDX payload");
    // 6. Trailing bytes, raw and inside gzip.
    let mut b = good_lbl.clone();
    b.push(0);
    let p = write(d, "trailing", &b);
    expect_err(read_idx_labels(&p), "trailing", "trailing bytes");
    let p = write(d, "trailing-gz", &gz(&b));
    expect_err(read_idx_labels(&p), "trailing-gz", "trailing bytes");
    // 7. Corrupt gzip: a damaged CRC, garbage after the gzip header, a cut stream, garbage after the member.
    let mut z = gz(&good_img);
    let n = z.len();
    z[n - 8] ^= 0xff; // CRC32 of the trailer
    let p = write(d, "bad-crc.gz", &z);
    expect_err(read_idx_images(&p), "bad-crc.gz", "damaged gzip data");
    let mut z = vec![0x1f, 0x8b];
    z.extend_from_slice(&[0xde; 40]);
    let p = write(d, "garbage.gz", &z);
    expect_err(read_idx_images(&p), "garbage.gz", "damaged gzip data");
    let z = gz(&good_img);
    let p = write(d, "cut.gz", &z[..z.len() / 2]);
    expect_err(read_idx_images(&p), "cut.gz", "");
    let mut z = gz(&good_lbl);
    z.extend_from_slice(b"junk after the member");
    let p = write(d, "junk-after.gz", &z);
    expect_err(read_idx_labels(&p), "junk-after.gz", "gzip");
    // 8. A header claiming too much (would be a 4 TiB allocation): refused before reading.
    let p = write(d, "huge", &idx(&[u32::MAX, 1024, 1024], &[]));
    expect_err(read_idx_images(&p), "huge", "2^31");
    let p = write(d, "huge-gz", &gz(&idx(&[60000, 60000, 60000], &[])));
    expect_err(read_idx_images(&p), "huge-gz", "2^31");
    // 9. Missing file.
    expect_err(read_idx_labels(&d.join("no-such-file")), "no-such-file", "not found");

    // load_mnist-level checks, each in its own directory.
    let split_dir = |img: Vec<u8>, lbl: Vec<u8>| {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "train-images-idx3-ubyte", &img);
        write(t.path(), "train-labels-idx1-ubyte.gz", &gz(&lbl));
        t
    };
    // 10. A label of 10.
    let mut bad = labels.clone();
    bad[2] = 10;
    let t = split_dir(good_img.clone(), labels_file(&bad));
    let msg = expect_err(load_mnist(t.path(), Split::Train), "train-labels-idx1-ubyte.gz", "label 10");
    assert!(msg.contains("index 2"), "{msg}");
    // 11. Image count != label count (names both files).
    let t = split_dir(good_img.clone(), labels_file(&labels[..2]));
    let msg = expect_err(load_mnist(t.path(), Split::Train), "train-images-idx3-ubyte", "3 images");
    assert!(msg.contains("train-labels-idx1-ubyte.gz") && msg.contains("2 labels"), "{msg}");
    // 12. Images that are not 28×28.
    let t = split_dir(idx(&[3, 20, 20], &vec![0; 3 * 400]), good_lbl.clone());
    expect_err(load_mnist(t.path(), Split::Train), "train-images-idx3-ubyte", "20x20");
    // 13. Missing files: names the path looked for and how to point at the data.
    let t = tempfile::tempdir().unwrap();
    let msg = expect_err(load_mnist(t.path(), Split::Test), "t10k-images-idx3-ubyte", "--data DIR");
    assert!(msg.contains("MTCOOL_MNIST_DIR"), "{msg}");
    let t = split_dir(good_img.clone(), good_lbl.clone());
    std::fs::remove_file(t.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    expect_err(load_mnist(t.path(), Split::Train), "train-labels-idx1-ubyte", "not found");
    // 14. A damaged file found by load_mnist is reported with its full name.
    let t = split_dir(good_img[..100].to_vec(), good_lbl.clone());
    expect_err(load_mnist(t.path(), Split::Train), "train-images-idx3-ubyte", "truncated");
}

#[test]
fn real_mnist_if_present() {
    let Some(dir) = real_mnist_dir() else { return };
    let train = load_mnist(&dir, Split::Train).unwrap();
    let test = load_mnist(&dir, Split::Test).unwrap();
    assert_eq!(train.len(), 60000);
    assert_eq!(test.len(), 10000);
    assert_eq!(train.images.len(), 60000 * 784);
    assert_eq!(test.images.len(), 10000 * 784);
    assert_eq!(train.labels[0], 5, "the first MNIST training digit is a 5");
    assert_eq!(test.labels[0], 7, "the first MNIST test digit is a 7");
    for s in [&train, &test] {
        let mut hist = [0usize; 10];
        s.labels.iter().for_each(|&l| hist[l as usize] += 1);
        for (digit, &c) in hist.iter().enumerate() {
            let frac = c as f64 / s.len() as f64;
            assert!((0.05..=0.15).contains(&frac), "digit {digit}: {frac:.3} of the split");
        }
        let mean = s.images.iter().map(|&v| v as f64).sum::<f64>() / s.images.len() as f64 / 255.0;
        assert!((0.12..0.14).contains(&mean), "pixel mean {mean}");
    }
}
