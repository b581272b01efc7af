//! Two-task runs are bit for bit what they were before the model, the steps and the reports took T
//! tasks (issue 16): tiny runs of every method on the three two-task jobs, their model.safetensors
//! hashed (FNV-1a 64) and compared with the hashes the two-task code wrote (commit 782b052, the same
//! command; the header's `mtcool.inputs` record, added later, is taken out before hashing). When
//! SGEMM's slab depth went from 256 to 1024 (issue 14) the sums of products with k > 256 changed
//! rounding: the hashes are those of 782b052 with that gemm.rs dropped in (its CPU backend is
//! otherwise the same as now); only the two attention rows changed. The
//! portable kernels and one thread make the bits independent of this machine's ISA.

mod common;

use std::process::Command;

/// (task, row, FNV-1a 64 of model.safetensors) from the two-task code.
const BEFORE: [(&str, &str, u64); 33] = [
    ("fundus", "independent", 0x32a18001a571134f),
    ("fundus", "joint", 0x640996709b8cd4de),
    ("fundus", "pcgrad", 0x94e51d08c16d36f0),
    ("fundus", "cagrad", 0xce78ec76e9eec2a),
    ("fundus", "mgda", 0xfb29b69384ef3e60),
    ("fundus", "graddrop", 0xa954d66c933e7b06),
    ("fundus", "mtan", 0xabf361c63d5e4b6c),
    ("fundus", "ctan", 0xd6a695d0f1850227),
    ("fundus", "mtcool", 0x4ebba749b81fa893),
    ("fundus", "mtcool-attention", 0xe7cef4fe22610a0a),
    ("fundus", "mtcool-vanilla", 0x1b8b7f6c58242141),
    ("fundus-av", "independent", 0x7d8587e2cc61cffc),
    ("fundus-av", "joint", 0xaf736364d9aa7a05),
    ("fundus-av", "pcgrad", 0x4fbc9ce598a8281b),
    ("fundus-av", "cagrad", 0xaeb2f47fbeca2f8c),
    ("fundus-av", "mgda", 0x631543d2c720542),
    ("fundus-av", "graddrop", 0xfc7b73d7b262efce),
    ("fundus-av", "mtan", 0x9b5efb377816acd8),
    ("fundus-av", "ctan", 0x4cebf914e4330ea2),
    ("fundus-av", "mtcool", 0xa4b70c702adeacc0),
    ("fundus-av", "mtcool-attention", 0x7efc10516bd30ca4),
    ("fundus-av", "mtcool-vanilla", 0x5d6fbf0f90481225),
    ("multimnist", "independent", 0x4b1863cca9491fc2),
    ("multimnist", "joint", 0x2423446141a191ea),
    ("multimnist", "pcgrad", 0x7f4aaa091cc572f6),
    ("multimnist", "cagrad", 0xf9f2772b837c11f3),
    ("multimnist", "mgda", 0xda5ffc5c1b90c4c0),
    ("multimnist", "graddrop", 0x8612a8e3bcb6399a),
    ("multimnist", "mtan", 0x7ffc36bb669432e3),
    ("multimnist", "ctan", 0xb0befd063e647b98),
    ("multimnist", "mtcool", 0x2a902d2164f3a981),
    ("multimnist", "mtcool-attention", 0xc5ce902e2c445928),
    ("multimnist", "mtcool-vanilla", 0x94d965dddfb4f31d),
];

/// The file as the two-task code wrote it: the `mtcool.inputs` record added since (issue 18) removed
/// from the header, which is re-serialised as the writer does (sorted keys, padded to 8 bytes).
fn without_inputs_record(bytes: &[u8]) -> Vec<u8> {
    use std::collections::BTreeMap;
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut top: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut meta: BTreeMap<String, String> = serde_json::from_value(top["__metadata__"].clone()).unwrap();
    assert!(meta.remove(mtcool::preprocess::INPUTS_KEY).is_some(), "a fresh model file has the inputs record");
    top.insert("__metadata__".into(), serde_json::to_value(meta).unwrap());
    let mut json = serde_json::to_vec(&top).unwrap();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(&bytes[8 + n..]);
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn flags(row: &str) -> Vec<&str> {
    match row {
        "mtcool-attention" => vec!["--method", "mtcool", "--fusion", "attention"],
        "mtcool-vanilla" => vec!["--method", "mtcool", "--mode", "vanilla"],
        m => vec!["--method", m],
    }
}

#[test]
fn two_task_runs_are_bit_identical_to_the_two_task_code() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = common::real_mnist_dir();
    let mut checked = 0;
    for (task, row, want) in BEFORE {
        if task == "multimnist" && mnist.is_none() {
            continue;
        }
        let out = dir.path().join(format!("{task}-{row}"));
        let mut args = vec!["train", "--task", task];
        args.extend(flags(row));
        if task != "multimnist" {
            args.extend(["--size", "32"]);
        }
        args.extend([
            "--limit-train",
            "16",
            "--limit-test",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
        ]);
        args.extend(["--out", out.to_str().unwrap()]);
        let o = Command::new(env!("CARGO_BIN_EXE_mtcool"))
            .args(&args)
            .env("MTCOOL_ISA", "portable")
            .env("MTCOOL_THREADS", "1")
            .output()
            .unwrap();
        common::assert_ok(&o, &format!("{task} {row}"));
        let got = fnv1a(&without_inputs_record(&std::fs::read(out.join("model.safetensors")).unwrap()));
        assert_eq!(got, want, "{task} {row}: the weights differ from the two-task code's");
        checked += 1;
    }
    assert!(checked >= 22);
}
