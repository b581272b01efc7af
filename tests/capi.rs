//! The C ABI (issue 18): `examples/c/predict.c`, compiled here against `include/mtcool.h` and
//! `libmtcool.so`, loads a fundus and a MultiMNIST checkpoint, prepares the image through the library
//! and reproduces `mtcool predict --logits` bit for bit; a bad model path is an error code and message.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_ok, run_mtcool as mtcool};

/// Where `libmtcool.so` is: `cargo test` builds the cdylib into `target/<profile>/deps` (`cargo build`
/// also links it up into `target/<profile>`, possibly older).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mtcool")).parent().unwrap().join("deps")
}

/// Compiles the C example into `dir`.
fn compile(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = target_dir();
    assert!(lib.join("libmtcool.so").is_file(), "no libmtcool.so in {} (the cdylib)", lib.display());
    let exe = dir.join("predict");
    let o = Command::new("cc")
        .arg(root.join("examples/c/predict.c"))
        .arg(format!("-I{}", root.join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .args(["-lmtcool", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .output()
        .expect("a C compiler (cc)");
    assert_ok(&o, "compiling examples/c/predict.c");
    exe
}

fn run_c(exe: &Path, model: &Path, image: &Path, out: &Path) -> std::process::Output {
    Command::new(exe).args([model, image, out]).env("LD_LIBRARY_PATH", target_dir()).output().unwrap()
}

/// Writes `img` as PNG (for predict) and as binary PGM/PPM (for the C example).
fn write_both(img: &image::DynamicImage, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (png, pnm) = (dir.join(format!("{name}.png")), dir.join(format!("{name}.pnm")));
    img.save(&png).unwrap();
    let (w, h) = (img.width(), img.height());
    let (magic, bytes) = match img {
        image::DynamicImage::ImageLuma8(g) => ("P5", g.as_raw().clone()),
        other => ("P6", other.to_rgb8().into_raw()),
    };
    let mut f = format!("{magic}\n{w} {h}\n255\n").into_bytes();
    f.extend(bytes);
    fs::write(&pnm, f).unwrap();
    (png, pnm)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// predict's logits of one image: per task, from the CSV's logit columns (classification) or the
/// `.f32` file (segmentation).
fn predict_logits(run: &Path, png: &Path, out: &Path) -> Vec<Vec<f32>> {
    let o = mtcool(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--logits",
        "--out",
        out.to_str().unwrap(),
        png.to_str().unwrap(),
    ]);
    assert_ok(&o, "predict");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("predictions.json")).unwrap()).unwrap();
    let csv = fs::read_to_string(out.join("predictions.csv")).unwrap();
    let (header, row) = {
        let mut l = csv.lines();
        (
            l.next().unwrap().split(',').map(String::from).collect::<Vec<_>>(),
            l.next().unwrap().split(',').map(String::from).collect::<Vec<_>>(),
        )
    };
    json[0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| match t["mask"].as_str() {
            Some(mask) => {
                let stem = Path::new(mask).file_stem().unwrap().to_str().unwrap().to_string();
                let dir = Path::new(mask).parent().unwrap().file_name().unwrap().to_owned();
                f32s(&fs::read(out.join("logits").join(dir).join(format!("{stem}.f32"))).unwrap())
            }
            None => {
                let prefix = format!("{}: logit(", t["task"].as_str().unwrap());
                header
                    .iter()
                    .zip(&row)
                    .filter(|(h, _)| h.starts_with(&prefix))
                    .map(|(_, v)| v.parse::<f32>().unwrap())
                    .collect()
            }
        })
        .collect()
}

fn check(run: &Path, img: &image::DynamicImage, dir: &Path, exe: &Path) {
    let (png, pnm) = write_both(img, dir, "input");
    let want = predict_logits(run, &png, &dir.join("pred"));
    let out = dir.join("c-logits.f32");
    let o = run_c(exe, &run.join("model.safetensors"), &pnm, &out);
    assert_ok(&o, "the C example");
    let got = f32s(&fs::read(&out).unwrap());
    let want: Vec<f32> = want.concat();
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "C logits differ from predict's");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("task 1:") && stdout.contains("task 2:"), "{stdout}");
}

#[test]
fn the_c_example_reproduces_predict_on_fundus_and_multimnist() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(dir.path());
    // Fundus (U-Net, RGB, a segmentation and a classification task), fed a larger image: resized.
    let run = dir.path().join("fundus");
    let args =
        ["train", "--task", "fundus", "--size", "32", "--limit-train", "16", "--limit-test", "8", "--epochs", "1"];
    assert_ok(&mtcool(&[&args[..], &["--out", run.to_str().unwrap()]].concat()), "train fundus");
    let img = image::RgbImage::from_fn(48, 40, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, 90]));
    fs::create_dir_all(dir.path().join("f")).unwrap();
    check(&run, &image::DynamicImage::ImageRgb8(img), &dir.path().join("f"), &exe);
    // MultiMNIST (MultiLeNet, grey, two classifiers), fed a 36×36 canvas: nearest-exact to 28×28.
    if let Some(mnist) = common::real_mnist_dir() {
        let run = dir.path().join("mm");
        let data = mnist.to_str().unwrap();
        let args = ["train", "--task", "multimnist", "--data", data, "--limit-train", "256", "--limit-test", "64"];
        assert_ok(&mtcool(&[&args[..], &["--out", run.to_str().unwrap()]].concat()), "train multimnist");
        let img = image::GrayImage::from_fn(36, 36, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]));
        fs::create_dir_all(dir.path().join("m")).unwrap();
        check(&run, &image::DynamicImage::ImageLuma8(img), &dir.path().join("m"), &exe);
    }
    // Errors come back as a code and a message, not a crash.
    let o =
        run_c(&exe, &dir.path().join("missing.safetensors"), &dir.path().join("f/input.pnm"), &dir.path().join("x"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("load: ") && err.contains("missing.safetensors"), "{err}");
    // A grey image for the RGB fundus model: MTC_ERR_SHAPE with the reason.
    let grey = image::DynamicImage::ImageLuma8(image::GrayImage::new(32, 32));
    let (_, pnm) = write_both(&grey, dir.path(), "grey");
    let o = run_c(&exe, &run.join("model.safetensors"), &pnm, &dir.path().join("y"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("prepare: has 1 colour channel"), "{:?}", o);
}
