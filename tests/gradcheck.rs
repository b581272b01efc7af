//! Finite-difference gradcheck of every tape op, over several random draws of shapes and inputs.

use mtcool::gradcheck::run_all;

#[test]
fn every_op_passes_gradcheck_on_random_shapes() {
    let mut failures = vec![];
    for seed in [0u64, 1, 2] {
        for o in run_all(seed) {
            println!("seed {seed} {:<36} {:.3e} (tol {:.0e}) {}", o.name, o.max_rel_err, o.tol, o.shapes);
            if !o.pass || !o.max_rel_err.is_finite() {
                failures
                    .push(format!("seed {seed}: {} err {:.3e} > {:.0e} at {}", o.name, o.max_rel_err, o.tol, o.shapes));
            }
        }
    }
    assert!(failures.is_empty(), "gradcheck failures:\n{}", failures.join("\n"));
}

#[test]
fn gradcheck_catches_a_wrong_gradient() {
    // A deliberately wrong op: y = x·x recorded as "x·x" but fed through scale so backward is off by 2×.
    use mtcool::gradcheck::{run_case, Case};
    use mtcool::Tensor;
    let case = Case {
        name: "broken".into(),
        inputs: vec![Tensor::new(&[3], vec![0.7, -1.2, 2.0]).unwrap()],
        check: vec![true],
        tol: 1e-2,
        build: Box::new(|t, v| {
            // Forward value: x·x. Gradient path: only one of the two factors carries gradient.
            let c = t.no_grad(|t| t.scale(v[0], 1.0).unwrap());
            t.mul(v[0], c)
        }),
    };
    let o = run_case(&case, 0);
    assert!(!o.pass && o.max_rel_err > 0.3, "harness missed a 2× gradient error: {}", o.max_rel_err);
}
