//! Viewport (crop, flip, scale) and encoding of rendered images.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::RenderError;
use super::lut::Image8;
use super::params::{Format, Viewport};

/// Output size and source region of a viewport (PS3.18 8.3.5.1.3): the region `sx,sy,|sw|,|sh|`
/// (default: the whole image) scaled, aspect kept, to fit `vw×vh`; an elided `vw` or `vh`
/// follows from the aspect ratio; no viewport means the native size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    pub out_w: u32,
    pub out_h: u32,
    pub flip_x: bool,
    pub flip_y: bool,
}

pub fn plan(cols: u32, rows: u32, vp: Option<&Viewport>) -> Result<Plan, RenderError> {
    let (cw, rh) = (f64::from(cols), f64::from(rows));
    let vp = vp.copied().unwrap_or_default();
    let left = vp.sx.unwrap_or(0.0);
    let top = vp.sy.unwrap_or(0.0);
    if left >= cw || top >= rh {
        return Err(RenderError::BadViewport(format!(
            "the region starts at {left},{top}, outside the {cols}×{rows} image"
        )));
    }
    let width = vp.sw.map_or(cw - left, f64::abs).min(cw - left);
    let height = vp.sh.map_or(rh - top, f64::abs).min(rh - top);
    let (out_w, out_h) = match (vp.vw, vp.vh) {
        (None, None) => (width.round(), height.round()),
        (Some(w), None) => (f64::from(w), (f64::from(w) * height / width).round()),
        (None, Some(h)) => ((f64::from(h) * width / height).round(), f64::from(h)),
        (Some(w), Some(h)) => {
            let scale = (f64::from(w) / width).min(f64::from(h) / height);
            ((width * scale).round(), (height * scale).round())
        }
    };
    Ok(Plan {
        left,
        top,
        width,
        height,
        out_w: (out_w as u32).clamp(1, 16384),
        out_h: (out_h as u32).clamp(1, 16384),
        flip_x: vp.sw.is_some_and(|w| w < 0.0),
        flip_y: vp.sh.is_some_and(|h| h < 0.0),
    })
}

/// Applies a [`Plan`] to an image.
pub fn apply(img: Image8, p: &Plan) -> Result<Image8, RenderError> {
    let whole = p.left == 0.0
        && p.top == 0.0
        && p.width == f64::from(img.width)
        && p.height == f64::from(img.height);
    let same_size = p.out_w == img.width && p.out_h == img.height;
    let mut out = if whole && same_size {
        img
    } else {
        let pixel = if img.channels == 3 {
            PixelType::U8x3
        } else {
            PixelType::U8
        };
        let channels = img.channels;
        let fail = |e: &dyn std::fmt::Display| RenderError::Decode(format!("resize: {e}"));
        let src =
            Image::from_vec_u8(img.width, img.height, img.data, pixel).map_err(|e| fail(&e))?;
        let mut dst = Image::new(p.out_w, p.out_h, pixel);
        // Downscaling averages (Lanczos3 keeps edges crisp); upscaling interpolates.
        let filter = if f64::from(p.out_w) < p.width {
            FilterType::Lanczos3
        } else {
            FilterType::Bilinear
        };
        let opts = ResizeOptions::new()
            .crop(p.left, p.top, p.width, p.height)
            .resize_alg(ResizeAlg::Convolution(filter));
        Resizer::new()
            .resize(&src, &mut dst, &opts)
            .map_err(|e| fail(&e))?;
        Image8 {
            width: p.out_w,
            height: p.out_h,
            channels,
            data: dst.into_vec(),
        }
    };
    let (w, c) = (out.width as usize, out.channels as usize);
    if p.flip_x {
        for row in out.data.chunks_exact_mut(w * c) {
            for x in 0..w / 2 {
                for k in 0..c {
                    row.swap(x * c + k, (w - 1 - x) * c + k);
                }
            }
        }
    }
    if p.flip_y {
        let h = out.height as usize;
        let stride = w * c;
        for y in 0..h / 2 {
            let (a, b) = out.data.split_at_mut((h - 1 - y) * stride);
            a[y * stride..(y + 1) * stride].swap_with_slice(&mut b[..stride]);
        }
    }
    Ok(out)
}

/// Encodes an 8-bit image.
pub fn encode(img: &Image8, format: Format, quality: u8) -> Result<Vec<u8>, RenderError> {
    let fail = |e: &dyn std::fmt::Display| RenderError::Decode(format!("encode: {e}"));
    let mut out = Vec::with_capacity(img.data.len() / 4 + 1024);
    match format {
        Format::Jpeg => {
            let (w, h) = (
                u16::try_from(img.width).map_err(|e| fail(&e))?,
                u16::try_from(img.height).map_err(|e| fail(&e))?,
            );
            let colour = if img.channels == 3 {
                jpeg_encoder::ColorType::Rgb
            } else {
                jpeg_encoder::ColorType::Luma
            };
            jpeg_encoder::Encoder::new(&mut out, quality)
                .encode(&img.data, w, h, colour)
                .map_err(|e| fail(&e))?;
        }
        Format::Png => {
            let mut enc = png::Encoder::new(&mut out, img.width, img.height);
            enc.set_color(if img.channels == 3 {
                png::ColorType::Rgb
            } else {
                png::ColorType::Grayscale
            });
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Fast);
            let mut writer = enc.write_header().map_err(|e| fail(&e))?;
            writer.write_image_data(&img.data).map_err(|e| fail(&e))?;
            writer.finish().map_err(|e| fail(&e))?;
        }
        Format::Gif => {
            let (w, h) = (
                u16::try_from(img.width).map_err(|e| fail(&e))?,
                u16::try_from(img.height).map_err(|e| fail(&e))?,
            );
            // Gray: the pixels index a global 256-level gray palette (exact). RGB: quantised
            // to a local palette of 256 colours (NeuQuant).
            let gray: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
            let (frame, global) = if img.channels == 3 {
                (gif::Frame::from_rgb_speed(w, h, &img.data, 10), &[][..])
            } else {
                (
                    gif::Frame::from_indexed_pixels(w, h, img.data.clone(), None),
                    &gray[..],
                )
            };
            let mut enc = gif::Encoder::new(&mut out, w, h, global).map_err(|e| fail(&e))?;
            enc.write_frame(&frame).map_err(|e| fail(&e))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewport_keeps_aspect_and_elides() {
        let p = plan(512, 256, None).unwrap();
        assert_eq!((p.out_w, p.out_h), (512, 256));
        let vp = Viewport {
            vw: Some(128),
            vh: Some(128),
            ..Default::default()
        };
        let p = plan(512, 256, Some(&vp)).unwrap();
        assert_eq!((p.out_w, p.out_h), (128, 64));
        let vp = Viewport {
            vh: Some(100),
            ..Default::default()
        };
        let p = plan(512, 256, Some(&vp)).unwrap();
        assert_eq!((p.out_w, p.out_h), (200, 100));
        let vp = Viewport {
            vw: Some(10),
            vh: Some(10),
            sx: Some(600.0),
            ..Default::default()
        };
        assert!(plan(512, 256, Some(&vp)).is_err());
    }

    #[test]
    fn flips_mirror_the_region() {
        let img = Image8 {
            width: 2,
            height: 2,
            channels: 1,
            data: vec![1, 2, 3, 4],
        };
        let vp = Viewport {
            sw: Some(-2.0),
            sh: Some(-2.0),
            sx: Some(0.0),
            sy: Some(0.0),
            ..Default::default()
        };
        let p = plan(2, 2, Some(&vp)).unwrap();
        assert_eq!(apply(img, &p).unwrap().data, vec![4, 3, 2, 1]);
    }
}
