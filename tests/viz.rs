//! Pictures: PNG output, contours, colour maps and tiling.

use mtcool::viz::{contour_overlay, grid, label_colors, write_png};

#[test]
fn png_round_trip() {
    let (w, h) = (7, 5);
    let rgb: Vec<u8> = (0..w * h * 3).map(|k| (k * 37 % 256) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.png");
    write_png(&path, &rgb, w, h).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!((back.width(), back.height()), (w as u32, h as u32));
    assert_eq!(back.into_raw(), rgb);

    let err = write_png(dir.path().join("bad.png"), &rgb[1..], w, h).unwrap_err();
    assert!(err.to_string().contains("bad.png"), "{err}");
}

#[test]
fn contour_of_a_square_is_its_boundary() {
    let (w, h) = (10, 8);
    let mut labels = vec![0u8; w * h];
    // Square of side 4 at (3..7, 2..6) with class 2, a class-1 pixel outside it.
    for y in 2..6 {
        for x in 3..7 {
            labels[y * w + x] = 2;
        }
    }
    labels[0] = 1;
    let rgb = vec![10u8; w * h * 3];
    let red = [255, 0, 0];
    let out = contour_overlay(&rgb, w, h, &[(&labels, 2, red)]);
    for y in 0..h {
        for x in 0..w {
            let on_boundary = (3..7).contains(&x) && (2..6).contains(&y) && (x == 3 || x == 6 || y == 2 || y == 5);
            let want = if on_boundary { red } else { [10; 3] };
            assert_eq!(out[3 * (y * w + x)..3 * (y * w + x) + 3], want, "pixel ({x}, {y})");
        }
    }
    // Threshold 1 also takes in the lone class-1 pixel (its own boundary, at the image corner).
    let out = contour_overlay(&rgb, w, h, &[(&labels, 1, red)]);
    assert_eq!(out[..3], red);
    assert_eq!(out.chunks_exact(3).filter(|p| *p == red).count(), 12 + 1);
}

#[test]
fn label_colours() {
    let out = label_colors(&[0, 2, 1, 9], &[[0, 0, 0], [1, 2, 3], [4, 5, 6]]);
    assert_eq!(out, vec![0, 0, 0, 4, 5, 6, 1, 2, 3, 255, 255, 255]);
}

#[test]
fn grid_layout() {
    let (w, h) = (4, 3);
    let tiles: Vec<Vec<u8>> = (0..5u8).map(|t| vec![t + 1; w * h * 3]).collect();
    let (img, gw, gh) = grid(&tiles, w, h, 2, 3);
    assert_eq!((gw, gh), (2 * w * 3, 3 * h * 3));
    assert_eq!(img.len(), gw * gh * 3);
    let at = |x: usize, y: usize| img[3 * (y * gw + x)];
    assert_eq!(at(0, 0), 1);
    assert_eq!(at(w * 3 - 1, h * 3 - 1), 1);
    assert_eq!(at(w * 3, 0), 2);
    assert_eq!(at(0, h * 3), 3);
    assert_eq!(at(gw - 1, 2 * h * 3 + 1), 0); // the missing sixth tile is black
    assert_eq!(at(0, gh - 1), 5);

    let (_, gw, gh) = grid(&tiles, w, h, 5, 1);
    assert_eq!((gw, gh), (5 * w, h));
}
