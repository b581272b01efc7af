//! Pictures for looking at data and predictions: 8-bit RGB buffers (interleaved, row-major, `w·h·3`),
//! mask contours and colour maps, tiling, and PNG output.

use std::path::Path;

use anyhow::Context;

/// Writes an 8-bit RGB image as PNG.
pub fn write_png(path: impl AsRef<Path>, rgb: &[u8], w: usize, h: usize) -> anyhow::Result<()> {
    let path = path.as_ref();
    anyhow::ensure!(
        rgb.len() == w * h * 3,
        "{}: RGB buffer has {} bytes, {w}x{h} needs {}",
        path.display(),
        rgb.len(),
        w * h * 3
    );
    image::save_buffer_with_format(
        path,
        rgb,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("{}: cannot write PNG", path.display()))
}

/// `rgb` with the 1-pixel inner boundary of each mask drawn over it, in order. A mask is
/// `(labels, id, colour)`: its region is the pixels with `label >= id`, and a region pixel is on the
/// boundary when one of its 4 neighbours is outside the region or outside the image.
pub fn contour_overlay(rgb: &[u8], w: usize, h: usize, masks: &[(&[u8], u8, [u8; 3])]) -> Vec<u8> {
    let mut out = rgb.to_vec();
    for &(labels, id, colour) in masks {
        assert_eq!(labels.len(), w * h, "mask size");
        let inside = |x: isize, y: isize| {
            x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h && labels[y as usize * w + x as usize] >= id
        };
        for y in 0..h as isize {
            for x in 0..w as isize {
                let edge = !inside(x - 1, y) || !inside(x + 1, y) || !inside(x, y - 1) || !inside(x, y + 1);
                if inside(x, y) && edge {
                    let p = 3 * (y as usize * w + x as usize);
                    out[p..p + 3].copy_from_slice(&colour);
                }
            }
        }
    }
    out
}

/// A label map shown as colours: label `l` gets `palette[l]`, labels past the palette white.
pub fn label_colors(labels: &[u8], palette: &[[u8; 3]]) -> Vec<u8> {
    labels.iter().flat_map(|&l| *palette.get(l as usize).unwrap_or(&[255; 3])).collect()
}

/// Tiles `w×h` RGB images left to right, top to bottom, `cols` per row, each upscaled `scale` times by
/// nearest neighbour, with no gaps; missing tiles in the last row are black. Returns `(rgb, width, height)`.
pub fn grid(tiles: &[Vec<u8>], w: usize, h: usize, cols: usize, scale: usize) -> (Vec<u8>, usize, usize) {
    let cols = cols.max(1);
    let rows = tiles.len().div_ceil(cols);
    let (gw, gh) = (cols * w * scale, rows * h * scale);
    let mut out = vec![0u8; gw * gh * 3];
    for (t, tile) in tiles.iter().enumerate() {
        assert_eq!(tile.len(), w * h * 3, "tile {t} size");
        let (ox, oy) = ((t % cols) * w * scale, (t / cols) * h * scale);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let src = 3 * ((y / scale) * w + x / scale);
                let dst = 3 * ((oy + y) * gw + ox + x);
                out[dst..dst + 3].copy_from_slice(&tile[src..src + 3]);
            }
        }
    }
    (out, gw, gh)
}
