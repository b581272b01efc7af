//! `predictions.png`: a few test images with the model's output next to the truth. Cup/disc: each
//! image twice, true contours (disc green, cup cyan) then predicted ones (disc blue, cup yellow); A/V:
//! the image, the true and the predicted label colours (artery red, vein blue).

use std::path::Path;

use anyhow::Result;

use super::data::{TaskData, TaskKind};
use crate::metrics::argmax_dim1;
use crate::model::{MultiTaskModel, Read, TaskSpec};
use crate::tape::Tape;
use crate::viz;

/// How many test images the picture shows.
pub const SHOWN: usize = 8;

pub fn write_predictions(model: &MultiTaskModel, test: &dyn TaskData, task: TaskKind, path: &Path) -> Result<()> {
    let n = test.len().min(SHOWN);
    // The picture shows task 1's segmentation (a user's folder may start with a classifier).
    if n == 0 || !matches!(model.cfg.tasks.first(), Some(TaskSpec::Segment { .. })) {
        return Ok(());
    }
    let idx: Vec<usize> = (0..n).collect();
    let batch = test.batch(&idx);
    let mut tape = Tape::new();
    tape.set_grad_enabled(false);
    let x = tape.constant(batch.x.to_backend(&model.store.backend())?);
    let logits = model.forward_all(&mut tape, x, &vec![Read::Train; model.n_tasks()])?;
    let pred: Vec<u8> = argmax_dim1(&*tape.value(logits[0]).host()?).0.iter().map(|&p| p as u8).collect();
    let truth: Vec<u8> = batch.labels[0].iter().map(|&l| l as u8).collect();
    let mut tiles = vec![];
    let mut side = 0;
    for (i, &example) in idx.iter().enumerate() {
        let Some((rgb, s)) = test.rgb(example) else { return Ok(()) };
        side = s;
        let px = s * s;
        let (t, p) = (&truth[i * px..(i + 1) * px], &pred[i * px..(i + 1) * px]);
        match task {
            TaskKind::Fundus => {
                tiles.push(viz::contour_overlay(&rgb, s, s, &[(t, 1, [0, 255, 0]), (t, 2, [0, 255, 255])]));
                tiles.push(viz::contour_overlay(&rgb, s, s, &[(p, 1, [60, 120, 255]), (p, 2, [255, 230, 0])]));
            }
            _ => {
                let palette = [[0, 0, 0], [230, 40, 40], [40, 90, 255], [40, 200, 60], [240, 200, 30], [200, 60, 220]];
                tiles.push(rgb);
                tiles.push(viz::label_colors(t, &palette));
                tiles.push(viz::label_colors(p, &palette));
            }
        }
    }
    let cols = if task == TaskKind::Fundus { 4 } else { 3 };
    let (img, w, h) = viz::grid(&tiles, side, side, cols, 3);
    viz::write_png(path, &img, w, h)
}
