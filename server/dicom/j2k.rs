//! JPEG 2000 lossless encoding (1.2.840.10008.1.2.4.90) of native pixel data.
//!
//! Written here because no maintained crate offers it: dicom-rs 0.10's transfer-syntax registry
//! only decodes JPEG 2000, and the `jpeg2k` wrapper can only save images it decoded itself. This
//! drives openjp2, the pure-Rust port of OpenJPEG that dicom-rs already uses to decode, through
//! its C-style API: reversible 5/3 wavelet, one quality layer, no component transform (so
//! PhotometricInterpretation stays as it is), one J2K codestream per frame.

use std::io::{Cursor, Seek, SeekFrom, Write};

use openjp2::image::{opj_image, opj_image_comptparm};
use openjp2::openjpeg::*;
use openjp2::{
    CODEC_FORMAT, COLOR_SPACE, OPJ_BOOL, OPJ_OFF_T, OPJ_SIZE_T, opj_cparameters_t, opj_image_t,
};

/// The layout of native samples.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
    /// Planar Configuration 1: all samples of one component, then the next.
    pub planar: bool,
}

impl Layout {
    pub fn frame_len(&self) -> usize {
        self.rows as usize
            * self.columns as usize
            * self.samples_per_pixel as usize
            * (self.bits_allocated as usize / 8)
    }
}

unsafe extern "C" fn write_fn(
    buf: *mut std::ffi::c_void,
    n: OPJ_SIZE_T,
    user: *mut std::ffi::c_void,
) -> OPJ_SIZE_T {
    // SAFETY: `user` is the Cursor installed by `encode_frame`, alive for the whole encode;
    // `buf` holds `n` bytes the codec wrote.
    let cur = unsafe { &mut *(user as *mut Cursor<Vec<u8>>) };
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
    match cur.write_all(data) {
        Ok(()) => n,
        Err(_) => usize::MAX,
    }
}

unsafe extern "C" fn skip_fn(n: OPJ_OFF_T, user: *mut std::ffi::c_void) -> OPJ_OFF_T {
    // SAFETY: as in `write_fn`.
    let cur = unsafe { &mut *(user as *mut Cursor<Vec<u8>>) };
    match cur.seek(SeekFrom::Current(n)) {
        Ok(_) => n,
        Err(_) => -1,
    }
}

unsafe extern "C" fn seek_fn(to: OPJ_OFF_T, user: *mut std::ffi::c_void) -> OPJ_BOOL {
    // SAFETY: as in `write_fn`.
    let cur = unsafe { &mut *(user as *mut Cursor<Vec<u8>>) };
    i32::from(u64::try_from(to).is_ok_and(|to| cur.seek(SeekFrom::Start(to)).is_ok()))
}

/// One sample as a signed integer, masked to BitsStored and sign-extended when signed.
fn sample(l: &Layout, frame: &[u8], index: usize) -> i32 {
    let raw: u32 = if l.bits_allocated == 8 {
        u32::from(frame[index])
    } else {
        u32::from(u16::from_le_bytes([frame[2 * index], frame[2 * index + 1]]))
    };
    let bits = u32::from(l.bits_stored.clamp(1, 16));
    let v = raw & ((1u32 << bits) - 1);
    if l.signed && v & (1 << (bits - 1)) != 0 {
        (v as i32) - (1i32 << bits)
    } else {
        v as i32
    }
}

/// Encodes one frame of native samples (little endian) as a lossless J2K codestream.
pub fn encode_frame(l: &Layout, frame: &[u8]) -> Result<Vec<u8>, String> {
    if !matches!(l.bits_allocated, 8 | 16) {
        return Err(format!(
            "JPEG 2000 encoding supports 8 or 16 bits allocated, not {}",
            l.bits_allocated
        ));
    }
    if frame.len() < l.frame_len() {
        return Err("pixel data is shorter than Rows x Columns x Samples".into());
    }
    let (w, h, n) = (l.columns, l.rows, u32::from(l.samples_per_pixel));
    let params: Vec<opj_image_comptparm> = (0..n)
        .map(|_| opj_image_comptparm {
            dx: 1,
            dy: 1,
            w,
            h,
            x0: 0,
            y0: 0,
            prec: u32::from(l.bits_stored),
            bpp: u32::from(l.bits_stored),
            sgnd: u32::from(l.signed),
        })
        .collect();
    let space = if n == 1 {
        COLOR_SPACE::OPJ_CLRSPC_GRAY
    } else {
        COLOR_SPACE::OPJ_CLRSPC_SRGB
    };
    let mut image = opj_image::create(&params, space).ok_or("cannot allocate the image")?;
    image.x0 = 0;
    image.y0 = 0;
    image.x1 = w;
    image.y1 = h;
    let pixels = (w * h) as usize;
    let comps = image.comps_mut().ok_or("image has no components")?;
    for (c, comp) in comps.iter_mut().enumerate() {
        let data = comp.data_mut().ok_or("component without data")?;
        for (p, d) in data.iter_mut().enumerate() {
            let index = if l.planar {
                c * pixels + p
            } else {
                p * n as usize + c
            };
            *d = sample(l, frame, index);
        }
    }
    // Resolutions: at most 6, and 2^(levels) may not exceed the smaller side.
    let min_side = w.min(h).max(1);
    let levels = (31 - min_side.leading_zeros()).min(5);
    let mut cp = opj_cparameters_t::default();
    // SAFETY: `cp` is a valid, exclusively borrowed parameter block.
    unsafe { opj_set_default_encoder_parameters(&mut cp) };
    cp.tcp_numlayers = 1;
    cp.tcp_rates[0] = 0.0;
    cp.cp_disto_alloc = 1;
    cp.irreversible = 0;
    cp.tcp_mct = 0;
    cp.numresolution = levels as i32 + 1;

    let mut out = Box::new(Cursor::new(Vec::<u8>::with_capacity(frame.len() / 2)));
    let image_ptr: *mut opj_image_t = Box::into_raw(image);
    // SAFETY: every pointer below is created here, checked for null, used only during this
    // block and released once at its end; `out` outlives the stream that writes into it.
    let ok = unsafe {
        let codec = opj_create_compress(CODEC_FORMAT::OPJ_CODEC_J2K);
        if codec.is_null() {
            openjp2::image::opj_image_destroy(image_ptr);
            return Err("cannot create the JPEG 2000 encoder".into());
        }
        let stream = opj_stream_create(1 << 16, 0);
        opj_stream_set_write_function(stream, Some(write_fn));
        opj_stream_set_skip_function(stream, Some(skip_fn));
        opj_stream_set_seek_function(stream, Some(seek_fn));
        opj_stream_set_user_data(stream, (&mut *out) as *mut Cursor<Vec<u8>> as *mut _, None);
        let ok = opj_setup_encoder(codec, &mut cp, image_ptr) == 1
            && opj_start_compress(codec, image_ptr, stream) == 1
            && opj_encode(codec, stream) == 1
            && opj_end_compress(codec, stream) == 1;
        opj_stream_destroy(stream);
        opj_destroy_codec(codec);
        openjp2::image::opj_image_destroy(image_ptr);
        ok
    };
    if !ok {
        return Err("the JPEG 2000 encoder failed".into());
    }
    let mut v = out.into_inner();
    if v.len() % 2 == 1 {
        // Fragments have even length (PS3.5 A.4).
        v.push(0);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_decoder() {
        let l = Layout {
            rows: 17,
            columns: 23,
            samples_per_pixel: 1,
            bits_allocated: 16,
            bits_stored: 12,
            signed: true,
            planar: false,
        };
        let mut frame = Vec::new();
        for i in 0..(17 * 23) {
            let v: i16 = ((i * 37) % 4096) as i16 - 2048;
            frame.extend_from_slice(&v.to_le_bytes());
        }
        let j2k = encode_frame(&l, &frame).unwrap();
        assert_eq!(&j2k[..4], &[0xFF, 0x4F, 0xFF, 0x51], "SOC + SIZ");
        let img = jpeg2k_decode(&j2k);
        let back: Vec<i32> = img;
        let want: Vec<i32> = (0..(17 * 23)).map(|i| sample(&l, &frame, i)).collect();
        assert_eq!(back, want);
    }

    /// Decodes with openjp2's own decoder (what dicom-pixeldata uses).
    fn jpeg2k_decode(data: &[u8]) -> Vec<i32> {
        let img = jpeg2k::Image::from_bytes(data).expect("decodes");
        img.components()[0].data().to_vec()
    }
}
