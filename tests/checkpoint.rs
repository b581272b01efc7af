//! Checkpoints: exact round trip through safetensors, the embedding API, and clear errors on bad files.

use mtcool::checkpoint::{from_bytes, load, save, to_bytes};
use mtcool::model::multitask::ModelConfig;
use mtcool::model::{Fusion, Method, MultiTaskModel};
use mtcool::predict::Predictor;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn cfg(method: Method) -> ModelConfig {
    ModelConfig::multimnist(method, Fusion::Concat, 1.0)
}

#[test]
fn round_trip_is_exact_for_every_method() {
    let dir = tempfile::tempdir().unwrap();
    for method in [Method::Independent, Method::Joint, Method::Mtcool] {
        let m = MultiTaskModel::new(cfg(method), 3);
        let path = dir.path().join(format!("{method:?}.safetensors"));
        save(&m, &path).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.cfg, m.cfg);
        for (a, b) in m.store.iter().zip(back.store.iter()) {
            assert_eq!((&a.name, &a.value), (&b.name, &b.value));
        }
        let x = Tensor::randn(&[3, 1, 28, 28], 1.0, &mut StdRng::seed_from_u64(1));
        let p1 = Predictor::from_model(m).logits(&x).unwrap();
        let p2 = Predictor::load(&path).unwrap().logits(&x).unwrap();
        assert_eq!(p1, p2);
    }
}

#[test]
fn names_follow_pytorch_conventions() {
    let m = MultiTaskModel::new(cfg(Method::Mtcool), 0);
    let names: Vec<&str> = m.store.iter().map(|p| p.name.as_str()).collect();
    for n in ["task1.extractor.conv1.weight", "task2.extractor.fc.bias", "task1.head.fc2.weight"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let j = MultiTaskModel::new(cfg(Method::Joint), 0);
    assert!(j.store.find("shared.extractor.conv2.weight").is_some());
    // PyTorch layouts: conv [out, in, k, k], linear [out, in].
    assert_eq!(m.store.value(m.store.find("task1.extractor.conv2.weight").unwrap()).shape(), [20, 10, 5, 5]);
    assert_eq!(m.store.value(m.store.find("task1.extractor.fc.weight").unwrap()).shape(), [50, 320]);
    assert_eq!(m.store.value(m.store.find("task1.head.fc1.weight").unwrap()).shape(), [50, 100]);
}

#[test]
fn bad_checkpoints_are_errors_not_panics() {
    let m = MultiTaskModel::new(cfg(Method::Joint), 0);
    let good = to_bytes(&m).unwrap();
    let other = to_bytes(&MultiTaskModel::new(ModelConfig::multimnist(Method::Joint, Fusion::Concat, 2.0), 0)).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated header", good[..6].to_vec()),
        ("truncated data", good[..good.len() - 10].to_vec()),
        ("garbage", b"not a checkpoint at all, definitely".to_vec()),
        ("huge header length", [&u64::MAX.to_le_bytes()[..], &good[8..]].concat()),
    ];
    for (what, bytes) in cases {
        assert!(from_bytes(&bytes).is_err(), "{what} was accepted");
    }
    // A well-formed file whose shapes disagree with its own metadata.
    let mut swapped = other.clone();
    // The config is JSON inside the header's JSON, so its quotes are escaped: width\":2.0
    let pat = br#"width\":2.0"#;
    let i = swapped.windows(pat.len()).position(|w| w == pat).expect("width in metadata");
    swapped[i..i + pat.len()].copy_from_slice(br#"width\":1.0"#);
    let e = from_bytes(&swapped).err().expect("shape mismatch accepted").to_string();
    assert!(e.contains("shape"), "{e}");
    assert!(load(std::path::Path::new("/nonexistent/model.safetensors")).is_err());
}

#[test]
fn predictor_checks_shapes_and_serves_unet_models() {
    use mtcool::model::{Arch, TaskSpec};
    let lenet = Predictor::from_model(MultiTaskModel::new(cfg(Method::Joint), 0));
    assert!(lenet.logits(&Tensor::zeros(&[2, 1, 32, 32])).is_err(), "MultiLeNet takes 28×28");
    assert!(lenet.logits(&Tensor::zeros(&[2, 3, 28, 28])).is_err(), "one input channel");
    let seg_cls = ModelConfig {
        arch: Arch::Unet { base: 4 },
        method: Method::Mtcool,
        fusion: Fusion::Concat,
        width: 1.0,
        in_channels: 3,
        tasks: vec![TaskSpec::Segment { classes: 3 }, TaskSpec::Classify { classes: 2 }],
    };
    let unet = Predictor::from_model(MultiTaskModel::new(seg_cls, 0));
    let [seg, cls]: [Tensor; 2] = unet.logits(&Tensor::full(&[2, 3, 32, 40], 0.3)).unwrap().try_into().unwrap();
    assert_eq!((seg.shape(), cls.shape()), (&[2, 3, 32, 40][..], &[2, 2][..]));
    assert!(unet.logits(&Tensor::zeros(&[1, 3, 30, 32])).is_err(), "H must be divisible by 4");
    assert!(unet.predict(&Tensor::zeros(&[1, 3, 32, 32])).is_err(), "predict() is for classification pairs");
}
