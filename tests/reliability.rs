//! Bad input of every kind — flags, data folders, checkpoints, run folders — fed to the binary: each
//! gives exactly one stderr line starting with `error:`, a non-zero exit, no panic, nothing on stdout,
//! and leaves no trace (no run folder created, an existing one byte-for-byte unchanged).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn mtcool(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtcool")).args(args).env("MTCOOL_THREADS", "1").output().expect("run mtcool")
}

/// Every file under `p` with its bytes (None if `p` does not exist).
fn snapshot(p: &Path) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        if p.is_dir() {
            out.insert(p.to_path_buf(), vec![]);
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), out);
            }
        } else {
            out.insert(p.to_path_buf(), fs::read(p).unwrap());
        }
    }
    p.exists().then(|| {
        let mut m = BTreeMap::new();
        walk(p, &mut m);
        m
    })
}

/// An IDX file: magic 00 00 08 <ndims>, big-endian sizes, payload.
fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
    v.extend(payload);
    v
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A copy of the run folder `src` at `dst`, then `edit` applied to it.
fn copy_run(src: &Path, dst: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    for (p, bytes) in snapshot(src).unwrap() {
        let to = dst.join(p.strip_prefix(src).unwrap());
        if p.is_dir() {
            fs::create_dir_all(&to).unwrap();
        } else {
            fs::write(&to, bytes).unwrap();
        }
    }
    edit(dst);
    dst.to_path_buf()
}

/// `bytes` (safetensors) with its JSON header rewritten by `f` (data offsets are relative, so stay valid).
fn edit_header(bytes: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    f(&mut header);
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    [&(json.len() as u64).to_le_bytes()[..], &json, &bytes[8 + n..]].concat()
}

fn first_ckpt(run: &Path) -> PathBuf {
    let mut all: Vec<PathBuf> = fs::read_dir(run.join("ckpt")).unwrap().map(|e| e.unwrap().path()).collect();
    all.sort();
    all.remove(0)
}

#[test]
fn every_bad_input_gives_one_error_line_and_leaves_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // A small finished run to corrupt copies of.
    let good = t.join("good");
    let tiny = [
        "--task",
        "fundus",
        "--size",
        "32",
        "--limit-train",
        "8",
        "--limit-test",
        "4",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ];
    let mut args: Vec<String> = ["train", "--checkpoint-every", "1", "--out", &s(&good)].map(String::from).to_vec();
    args.extend(tiny.map(String::from));
    let out = mtcool(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let model = fs::read(good.join("model.safetensors")).unwrap();

    // Data folders.
    let empty = t.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let mnist = |name: &str, files: &[(&str, Vec<u8>)]| {
        let d = t.join(name);
        files.iter().for_each(|(f, b)| write(&d.join(f), b));
        d
    };
    let images3 = idx(&[3, 28, 28], &[7; 3 * 784]);
    let labels3 = ("train-labels-idx1-ubyte", idx(&[3], &[1, 2, 3]));
    let mnist_bad_magic = mnist("m1", &[("train-images-idx3-ubyte", b"GIF89a not idx".to_vec()), labels3.clone()]);
    let mnist_trunc_gz =
        mnist("m2", &[("train-images-idx3-ubyte.gz", vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2]), labels3.clone()]);
    let mnist_count =
        mnist("m3", &[("train-images-idx3-ubyte", images3.clone()), ("train-labels-idx1-ubyte", idx(&[2], &[1, 2]))]);
    let mnist_size = mnist("m4", &[("train-images-idx3-ubyte", idx(&[1, 2, 2], &[0; 4])), labels3.clone()]);
    let mnist_label = mnist(
        "m5",
        &[("train-images-idx3-ubyte", images3.clone()), ("train-labels-idx1-ubyte", idx(&[3], &[1, 12, 3]))],
    );
    let mnist_short = mnist("m6", &[("train-images-idx3-ubyte", idx(&[3, 28, 28], &[0; 100])), labels3.clone()]);
    let mnist_no_test = mnist("m7", &[("train-images-idx3-ubyte", images3.clone()), labels3.clone()]);
    let refuge_bad_png = t.join("r1");
    write(&refuge_bad_png.join("Images/Glaucoma/a.png"), b"\x89PNG\r\n\x1a\nnot really");
    write(&refuge_bad_png.join("Masks/Glaucoma/a.png"), b"\x89PNG\r\n\x1a\nnot really");
    let refuge_no_mask = t.join("r2");
    let mut png = vec![];
    image::RgbImage::new(8, 8).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    write(&refuge_no_mask.join("Images/Glaucoma/a.png"), &png);
    fs::create_dir_all(refuge_no_mask.join("Masks")).unwrap();
    let hrf_no_ann = t.join("h1");
    write(&hrf_no_ann.join("images/01_dr.png"), &png);
    let a_file = t.join("a-file");
    write(&a_file, b"not a folder");

    // Damaged copies of the good run.
    let no_ckpt = copy_run(&good, &t.join("no-ckpt"), |r| fs::remove_dir_all(r.join("ckpt")).unwrap());
    let trunc_ckpt = copy_run(&good, &t.join("trunc-ckpt"), |r| {
        for e in fs::read_dir(r.join("ckpt")).unwrap() {
            let p = e.unwrap().path();
            let b = fs::read(&p).unwrap();
            fs::write(&p, &b[..b.len() / 2]).unwrap();
        }
        write(&r.join("ckpt/.step-9.safetensors.tmp"), b"half-written");
    });
    let model_as_ckpt = copy_run(&good, &t.join("model-ckpt"), |r| {
        fs::remove_dir_all(r.join("ckpt")).unwrap();
        write(&r.join("ckpt/step-2.safetensors"), &model);
    });
    let huge_header = copy_run(&good, &t.join("huge-header"), |r| {
        for e in fs::read_dir(r.join("ckpt")).unwrap() {
            let p = e.unwrap().path();
            let mut b = fs::read(&p).unwrap();
            b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            fs::write(&p, b).unwrap();
        }
    });
    let changed_cfg = copy_run(&good, &t.join("changed-cfg"), |r| {
        let c = fs::read_to_string(r.join("config.json")).unwrap().replace("\"seed\": 0", "\"seed\": 5");
        fs::write(r.join("config.json"), c).unwrap();
    });
    let bad_cfg = copy_run(&good, &t.join("bad-cfg"), |r| fs::write(r.join("config.json"), "{\"task\": ").unwrap());
    let bad_cfg_value = copy_run(&good, &t.join("bad-cfg-value"), |r| {
        let c = fs::read_to_string(r.join("config.json")).unwrap().replace("\"batch_size\": 4", "\"batch_size\": 0");
        fs::write(r.join("config.json"), c).unwrap();
    });
    let ckpt_shape = copy_run(&good, &t.join("ckpt-shape"), |r| {
        let p = first_ckpt(r);
        let b = edit_header(&fs::read(&p).unwrap(), |h| {
            h["optim.m.task2.head.fc1.weight"]["shape"] = serde_json::json!([16, 32]);
        });
        fs::write(p, b).unwrap();
        fs::remove_file(r.join("ckpt/step-2.safetensors")).unwrap();
    });
    let edit_model = |name: &str, bytes: Vec<u8>| {
        copy_run(&good, &t.join(name), |r| fs::write(r.join("model.safetensors"), bytes).unwrap())
    };
    let model_trunc = edit_model("model-trunc", model[..model.len() - 7].to_vec());
    let model_huge = edit_model("model-huge", [&u64::MAX.to_le_bytes()[..], &model[8..]].concat());
    let model_dtype =
        edit_model("model-dtype", edit_header(&model, |h| h["task1.head.conv.bias"]["dtype"] = "I32".into()));
    let model_shape = edit_model(
        "model-shape",
        edit_header(&model, |h| h["task2.head.fc1.weight"]["shape"] = serde_json::json!([16, 32])),
    );
    let model_other = {
        let cfg =
            mtcool::model::ModelConfig::multimnist(mtcool::model::Method::Joint, mtcool::model::Fusion::Concat, 0.2);
        edit_model("model-other", mtcool::checkpoint::to_bytes(&mtcool::model::MultiTaskModel::new(cfg, 0)).unwrap())
    };
    let model_garbage = edit_model("model-garbage", b"\x10\0\0\0\0\0\0\0{\"a\":1}         ".to_vec());
    let no_summary = copy_run(&good, &t.join("no-summary"), |r| fs::remove_file(r.join("summary.json")).unwrap());

    let new = t.join("new-run");
    let train = |extra: &[&str]| -> (Vec<String>, PathBuf) {
        let mut a: Vec<String> = ["train", "--out", &s(&new)].map(String::from).to_vec();
        // The tiny run's flags, less those the case sets itself.
        let set = |flag: &str| extra.iter().any(|e| e.split('=').next() == Some(flag));
        a.extend(tiny.chunks(2).filter(|fv| !set(fv[0])).flatten().chain(extra).map(|x| x.to_string()));
        (a, new.clone())
    };
    let resume = |run: &Path, extra: &[&str]| -> (Vec<String>, PathBuf) {
        let mut a = vec!["train".to_string(), "--resume".into(), s(run)];
        a.extend(extra.iter().map(|x| x.to_string()));
        (a, run.to_path_buf())
    };
    let eval = |run: &Path| (vec!["eval".to_string(), "--run".into(), s(run)], run.to_path_buf());
    let data = |task: &str, dir: &Path| train(&["--task", task, "--data", dir.to_str().unwrap()]);

    let cases: Vec<(&str, (Vec<String>, PathBuf))> = vec![
        ("batch size 0", train(&["--batch-size", "0"])),
        ("lr 0", train(&["--lr", "0"])),
        ("lr negative", train(&["--lr=-0.1"])),
        ("lr NaN", train(&["--lr", "NaN"])),
        ("lr not a number", train(&["--lr", "fast"])),
        ("b 0", train(&["--b", "0"])),
        ("b negative", train(&["--b=-1e-3"])),
        ("epochs 0", train(&["--epochs", "0"])),
        ("batch size negative", train(&["--batch-size=-4"])),
        ("width 0", train(&["--width", "0"])),
        ("width too big", train(&["--width", "100"])),
        ("momentum 1", train(&["--momentum", "1"])),
        ("weight decay negative", train(&["--weight-decay=-1"])),
        ("noise samples 0", train(&["--noise-samples", "0"])),
        ("inner steps 0", train(&["--inner-steps", "0"])),
        ("limit train 0", train(&["--limit-train", "0"])),
        ("limit test 0", train(&["--limit-test", "0"])),
        ("size not a multiple of 4", train(&["--size", "30"])),
        ("size too small", train(&["--size", "8"])),
        ("synthetic size below 32", train(&["--size", "16"])),
        ("keep checkpoints 0", train(&["--keep-checkpoints", "0"])),
        ("checkpoint every 0", train(&["--checkpoint-every", "0"])),
        ("unknown task", train(&["--task", "cifar"])),
        ("unknown method", train(&["--method", "magic"])),
        ("unknown mode", train(&["--mode", "turbo"])),
        ("unknown optimizer", train(&["--optimizer", "lbfgs"])),
        ("unknown device", train(&["--device", "tpu"])),
        ("seed not a number", train(&["--seed", "x"])),
        ("output under a regular file", {
            let (mut a, _) = train(&[]);
            let i = a.iter().position(|x| x == "--out").unwrap();
            a[i + 1] = s(&a_file.join("run"));
            (a, a_file.clone())
        }),
        ("mnist folder missing", data("multimnist", &t.join("nope"))),
        ("mnist folder empty", data("multimnist", &empty)),
        ("mnist bad magic", data("multimnist", &mnist_bad_magic)),
        ("mnist truncated gzip", data("multimnist", &mnist_trunc_gz)),
        ("mnist label/image count mismatch", data("multimnist", &mnist_count)),
        ("mnist images not 28x28", data("multimnist", &mnist_size)),
        ("mnist label not a digit", data("multimnist", &mnist_label)),
        ("mnist truncated payload", data("multimnist", &mnist_short)),
        ("mnist without the test split", data("multimnist", &mnist_no_test)),
        ("refuge folder empty", data("fundus", &empty)),
        ("refuge corrupt png", data("fundus", &refuge_bad_png)),
        ("refuge image without mask", data("fundus", &refuge_no_mask)),
        ("hrf-av without annotations", data("fundus-av", &hrf_no_ann)),
        ("data is a file", data("fundus", &a_file)),
        ("resume missing folder", resume(&t.join("nope"), &[])),
        ("resume non-run folder", resume(&empty, &[])),
        ("resume with a conflicting flag", resume(&good, &["--lr", "0.5"])),
        ("resume with --out", resume(&good, &["--out", "elsewhere"])),
        ("resume bad config.json", resume(&bad_cfg, &[])),
        ("resume config.json with bad value", resume(&bad_cfg_value, &[])),
        ("resume without checkpoints", resume(&no_ckpt, &[])),
        ("resume truncated checkpoints", resume(&trunc_ckpt, &[])),
        ("resume model file as checkpoint", resume(&model_as_ckpt, &[])),
        ("resume huge header size", resume(&huge_header, &[])),
        ("resume config changed since", resume(&changed_cfg, &[])),
        ("resume optimiser state of wrong shape", resume(&ckpt_shape, &[])),
        ("resume keep checkpoints 0", resume(&good, &["--keep-checkpoints", "0"])),
        ("eval missing folder", eval(&t.join("nope"))),
        ("eval non-run folder", eval(&empty)),
        ("eval without summary", eval(&no_summary)),
        ("eval bad config.json", eval(&bad_cfg)),
        ("eval truncated model", eval(&model_trunc)),
        ("eval huge header size", eval(&model_huge)),
        ("eval wrong dtype", eval(&model_dtype)),
        ("eval wrong shape", eval(&model_shape)),
        ("eval model of another config", eval(&model_other)),
        ("eval safetensors not from mtcool", eval(&model_garbage)),
    ];
    let mut failures = vec![];
    for (what, (args, watch)) in &cases {
        let before = snapshot(watch);
        let out = mtcool(args);
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        let problem = if out.status.success() {
            Some("succeeded".to_string())
        } else if lines.len() != 1 || !lines[0].starts_with("error: ") || err.contains("panicked at") {
            Some(format!("stderr is not one error line:\n{err}"))
        } else if !out.stdout.is_empty() {
            Some(format!("wrote to stdout: {}", String::from_utf8_lossy(&out.stdout)))
        } else if snapshot(watch) != before {
            Some(format!("changed {}", watch.display()))
        } else {
            None
        };
        match problem {
            Some(p) => failures.push(format!("{what}: {p}")),
            None => eprintln!("{what:<40} {}", lines[0]),
        }
    }
    assert!(cases.len() >= 25);
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
