//! Task `thumbnail`: JPEG, PNG, WebP, GIF (first frame) and TIFF in; JPEG,
//! PNG or WebP out, mirrored under the destination; a source keeps its name
//! when it has the output's extension and gets the output's extension
//! appended otherwise (`a.jpg` -> `a.jpg`, `a.png` -> `a.png.jpg`, see
//! [`thumbnail_name`]), so `a.jpg` and `a.png` in one folder never collide.
//! A TIFF of floats or 32-bit integers (elevation models, detector counts)
//! is shown stretched over its own range of values.
//!
//! Why it is fast: JPEGs are decoded by libjpeg-turbo (the `turbojpeg`
//! crate, built from its bundled source and linked statically, so the
//! engine needs no shared library at run time) with DCT scaling
//! (shrink-on-decode at M/8 for M = 1..8, the largest reduction that still
//! leaves at least the target size), which is how libvips and Pillow's
//! `draft()` avoid decoding 24 megapixels for a 1 Mpx thumbnail. Those two
//! stop at 1/2, 1/4 and 1/8; libjpeg-turbo scales by any M/8, so a 3000x2000
//! or 4000x3000 photo bound for 1024 pixels decodes at 3/8 instead of 1/2
//! (0.56x the pixels to convert and resize). What is left of the resize is a
//! reduction by less than 2, done by a SIMD convolution (`fast_image_resize`):
//! Catmull-Rom (Pillow's bicubic) up to 2x, Lanczos3 beyond (images not
//! scaled on decode). EXIF orientation is applied to the small result, and
//! a JPEG thumbnail is encoded by libjpeg-turbo too.
//!
//! Where the time goes (bench/tasks.py, 300 JPEGs of 6-24 Mpx to 1024 px,
//! perf, before M/8 scaling): Huffman decoding of the whole file 46% (the
//! floor: every coefficient is entropy-decoded whatever the scale), scaled
//! IDCT 17%, resize 13%, YCbCr to RGB 3%, encoding the thumbnail 5%,
//! zeroing fresh pixel buffers 3.5% (the decode buffer is now reused per
//! thread), file I/O 2%. Photos are slow per file, so the task asks for
//! small batches ([`Task::files_per_batch`]) to keep every core busy.
//!
//! Bombs: the declared width x height is checked against `max_pixels`
//! before any pixel is decoded, and the other decoders run under `image`
//! allocation limits.
use std::ffi::{OsStr, OsString};
use std::io::{BufWriter, Cursor, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use fast_image_resize as fir;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageEncoder, RgbImage};
use serde::Deserialize;
use serde_json::json;

use super::{parse_options, Aggregate, FileCtx, FileOutcome, Task, TaskInfo};
use crate::output::{
    existing_schema, output_for, skipped_exists, write_failure, AtomicFile, Committed, Existing,
};
use crate::results::{FailureKind, FileFailure};

pub const INFO: TaskInfo = TaskInfo {
    name: "thumbnail",
    version: "1",
    description: "Resizes JPEG, PNG, WebP, GIF and TIFF images to thumbnails (fit, fill or pad), applying EXIF orientation.",
    options_schema,
    result_schema,
    writes_files: true,
    size_independent: false,
    build,
};

const IMAGE_EXT: &[&str] = &["jpg", "jpeg", "jpe", "png", "webp", "gif", "tif", "tiff"];

fn options_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "thumbnail options",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "width": {"description": "Target width in pixels.", "type": "integer", "minimum": 1, "maximum": 16384, "default": 1024},
            "height": {"description": "Target height in pixels.", "type": "integer", "minimum": 1, "maximum": 16384, "default": 1024},
            "mode": {"description": "fit: inside WxH, aspect kept; fill: cover then centre-crop to exactly WxH (a side shorter than the target stays as it is unless upscale); pad: fit then pad to exactly WxH.",
                     "enum": ["fit", "fill", "pad"], "default": "fit"},
            "format": {"description": "Output format.", "enum": ["jpeg", "png", "webp"], "default": "jpeg"},
            "quality": {"description": "JPEG quality (WebP output is lossless).", "type": "integer", "minimum": 1, "maximum": 100, "default": 85},
            "upscale": {"description": "Enlarge images smaller than the target (fit, fill); without it, fill crops a small image without enlarging it and pad pads it.", "type": "boolean", "default": false},
            "background": {"description": "Colour as #rrggbb of the padding (pad mode) and under transparent pixels (thumbnails have no alpha channel).", "type": "string", "pattern": "^#[0-9a-fA-F]{6}$", "default": "#ffffff"},
            "max_pixels": {"description": "Largest source width x height accepted (decompression-bomb limit).",
                           "type": "integer", "minimum": 1, "default": 200000000},
            "existing": existing_schema()
        }
    })
}

fn result_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "output": {"type": "string"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "source_width": {"type": "integer"},
            "source_height": {"type": "integer"},
            "skipped": {"type": "string"}
        }
    })
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Fit,
    Fill,
    Pad,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OutFormat {
    #[default]
    Jpeg,
    Png,
    Webp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    width: u32,
    height: u32,
    mode: Mode,
    format: OutFormat,
    quality: u8,
    upscale: bool,
    background: String,
    max_pixels: u64,
    existing: Existing,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            width: 1024,
            height: 1024,
            mode: Mode::Fit,
            format: OutFormat::Jpeg,
            quality: 85,
            upscale: false,
            background: "#ffffff".into(),
            max_pixels: 200_000_000,
            existing: Existing::Skip,
        }
    }
}

pub struct Thumbnail {
    o: Options,
    background: [u8; 3],
}

fn build(options_json: &str) -> Result<Arc<dyn Task>, String> {
    let o: Options = parse_options(options_json)?;
    if !(1..=16384).contains(&o.width) || !(1..=16384).contains(&o.height) {
        return Err("width and height must be between 1 and 16384".into());
    }
    if !(1..=100).contains(&o.quality) {
        return Err("quality must be between 1 and 100".into());
    }
    let bg = o.background.strip_prefix('#').unwrap_or("");
    let parse = |i: usize| u8::from_str_radix(bg.get(i..i + 2).unwrap_or("zz"), 16);
    let background = match (bg.len(), parse(0), parse(2), parse(4)) {
        (6, Ok(r), Ok(g), Ok(b)) => [r, g, b],
        _ => return Err(format!("background {:?} is not #rrggbb", o.background)),
    };
    Ok(Arc::new(Thumbnail { o, background }))
}

/// The lower-cased extension of `rel` when it names an image this task
/// reads (by extension only: the content is checked when decoded).
fn image_ext(rel: &Path) -> Option<String> {
    let ext = rel.extension()?.to_string_lossy().to_ascii_lowercase();
    IMAGE_EXT.contains(&ext.as_str()).then_some(ext)
}

/// The result for a file without an image extension: skipped, not failed,
/// as a folder of photos usually holds other files too.
fn not_an_image() -> String {
    json!({"skipped": "not an image (by extension)"}).to_string()
}

/// The thumbnail's file name for a source named `name` in `folder`: the
/// source name itself when it already has the output format's extension
/// (`a.jpg` -> `a.jpg`, `b.JPEG` -> `b.JPEG`), else the source name plus the
/// output extension (`a.png` -> `a.png.jpg`), so sources that differ only by
/// extension (`a.jpg`, `a.png`, `a.webp`) never share a thumbnail. The one
/// remaining clash, `a.png` beside `a.png.jpg`, is resolved by giving the
/// latter a second extension (`a.png.jpg.jpg`).
fn thumbnail_name(name: &OsStr, format: OutFormat, folder: Option<&Path>) -> OsString {
    let (ext, aliases): (&str, &[&str]) = match format {
        OutFormat::Jpeg => ("jpg", &["jpg", "jpeg", "jpe"]),
        OutFormat::Png => ("png", &["png"]),
        OutFormat::Webp => ("webp", &["webp"]),
    };
    let path = Path::new(name);
    let has_ext = |p: &Path, allowed: &[&str]| {
        p.extension()
            .is_some_and(|e| allowed.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
    };
    let stem = path.file_stem().map(Path::new);
    let keeps_name = has_ext(path, aliases)
        && !(stem.is_some_and(|s| has_ext(s, IMAGE_EXT))
            && folder.is_some_and(|f| stem.is_some_and(|s| f.join(s).exists())));
    let mut n = name.to_os_string();
    if !keeps_name {
        n.push(".");
        n.push(ext);
    }
    n
}

/// Most scans a progressive JPEG may have (libjpeg-turbo's own tools use
/// 500 against scan bombs; real photos have about 10).
const MAX_SCANS: u32 = 500;

thread_local! {
    /// This pool thread's libjpeg-turbo decompressor, reused across images.
    static TURBO: std::cell::RefCell<Option<turbojpeg::Decompressor>> =
        const { std::cell::RefCell::new(None) };
    /// This pool thread's libjpeg-turbo compressor, reused across images.
    static TURBO_OUT: std::cell::RefCell<Option<turbojpeg::Compressor>> =
        const { std::cell::RefCell::new(None) };
    /// This pool thread's buffer for decoded pixels, reused across images so
    /// that a new image does not zero megabytes first (it is overwritten by
    /// the decoder). Taken while in use; kept only up to [`KEEP_PIXELS`].
    static PIXELS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Largest pixel buffer a pool thread keeps between images (a 24 Mpx photo
/// decoded at 1/2 is 18 MB); a bigger one is freed after its image.
const KEEP_PIXELS: usize = 32 << 20;

/// A buffer of exactly `len` bytes, reusing this thread's (not zeroed again
/// where a previous image already wrote).
/// An image's embedded ICC colour profile, if any.
type Icc = Option<Vec<u8>>;

/// Larger profiles are dropped: real ones are a few kilobytes (sRGB, Display
/// P3) to a few hundred (printer profiles).
const MAX_ICC_BYTES: usize = 1 << 20;
const ICC_MARKER: &[u8] = b"ICC_PROFILE\0";
/// Profile bytes per APP2 segment: 65,535 less the length and the header.
const ICC_CHUNK: usize = 65_535 - 2 - 14;

/// The ICC profile of a JPEG, from its APP2 `ICC_PROFILE` segments in
/// sequence order, or None (also when a segment is missing), as
/// `jpeg-decoder` assembles it from the headers. Thumbnails carry it over,
/// as libvips does: without it a wide-gamut photo (Display P3 from a phone,
/// Adobe RGB from a camera) is read as sRGB and looks dull.
fn jpeg_icc_profile(bytes: &[u8]) -> Icc {
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.read_info().ok()?;
    dec.icc_profile().filter(|p| p.len() <= MAX_ICC_BYTES)
}

/// `jpeg` with `profile` in APP2 segments after SOI (and JFIF's APP0).
fn with_jpeg_icc(jpeg: &[u8], profile: &[u8]) -> Vec<u8> {
    let chunks: Vec<&[u8]> = profile.chunks(ICC_CHUNK).collect();
    let Ok(count) = u8::try_from(chunks.len()) else {
        return jpeg.to_vec();
    };
    let mut at = 2;
    if jpeg.get(2..4) == Some(&[0xFF, 0xE0]) && jpeg.len() >= 6 {
        at += 2 + usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    }
    let mut out = Vec::with_capacity(jpeg.len() + profile.len() + 18 * chunks.len());
    out.extend_from_slice(&jpeg[..at]);
    for (n, chunk) in chunks.iter().enumerate() {
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&((2 + ICC_MARKER.len() + 2 + chunk.len()) as u16).to_be_bytes());
        out.extend_from_slice(ICC_MARKER);
        out.extend_from_slice(&[n as u8 + 1, count]);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// `img` over a `background` colour. Dropping the alpha channel instead
/// showed what transparent pixels happen to hold, black in most exports:
/// a logo on a transparent PNG became a logo on black.
fn flatten(img: &image::RgbaImage, background: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b, a] = img.get_pixel(x, y).0;
        let a = u16::from(a);
        let mix =
            |c: u8, bg: u8| ((u16::from(c) * a + u16::from(bg) * (255 - a) + 127) / 255) as u8;
        image::Rgb([
            mix(r, background[0]),
            mix(g, background[1]),
            mix(b, background[2]),
        ])
    })
}

/// RGB from CMYK as a JPEG stores it. Adobe software, which writes nearly
/// every CMYK JPEG, stores it inverted (255 is no ink), and Pillow and
/// libvips read it so; the conversion is the naive one, without a colour
/// profile: `R = C' x K' / 255` on the stored values.
fn adobe_cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8]) {
    for (p, out) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let k = u16::from(p[3]);
        for (o, &c) in out.iter_mut().zip(&p[..3]) {
            *o = (u16::from(c) * k / 255) as u8;
        }
    }
}

fn pixel_buffer(len: usize) -> Vec<u8> {
    let mut buf = PIXELS.take();
    buf.resize(len, 0);
    buf
}

/// Gives a pixel buffer back for the next image on this thread.
fn recycle_pixels(buf: Vec<u8>) {
    if buf.capacity() <= KEEP_PIXELS {
        PIXELS.set(buf);
    }
}

/// Files per batch: a photo takes tens of milliseconds, so 16 of them make
/// a batch of under a second, and 300 photos spread over every core.
const FILES_PER_BATCH: usize = 16;

/// Encodes a thumbnail as JPEG with libjpeg-turbo (SIMD colour conversion,
/// DCT and Huffman coding): chroma halved both ways below quality 90, as
/// libvips and Pillow do, full chroma from 90 up.
fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, turbojpeg::Error> {
    TURBO_OUT.with(|cell| {
        let mut slot = cell.borrow_mut();
        let enc = match slot.as_mut() {
            Some(enc) => enc,
            None => slot.insert(turbojpeg::Compressor::new()?),
        };
        enc.set_quality(i32::from(quality))?;
        enc.set_subsamp(if quality < 90 {
            turbojpeg::Subsamp::Sub2x2
        } else {
            turbojpeg::Subsamp::None
        })?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        enc.compress_to_vec(turbojpeg::Image {
            pixels: img.as_raw().as_slice(),
            width: w,
            pitch: 3 * w,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        })
    })
}

/// The smallest libjpeg-turbo DCT scale M/8 (M = 1..8) at which a `w` x `h`
/// JPEG still decodes to at least `rw` x `rh`.
fn jpeg_scale(w: usize, h: usize, rw: u32, rh: u32) -> turbojpeg::ScalingFactor {
    (1..=8)
        .map(|m| turbojpeg::ScalingFactor::new(m, 8))
        .find(|f| f.scale(w) >= rw as usize && f.scale(h) >= rh as usize)
        .unwrap_or(turbojpeg::ScalingFactor::ONE)
}

/// `samples` mapped linearly from their smallest to their largest finite
/// value onto 0-255 (all of them 0 when they are all one value); a NaN or
/// an infinity is 0.
fn stretch<T: Copy>(samples: &[T], value: impl Fn(T) -> f64) -> Vec<u8> {
    let (lo, hi) = samples
        .iter()
        .map(|&s| value(s))
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    samples
        .iter()
        .map(|&s| {
            let v = value(s);
            if v.is_finite() {
                ((v - lo) * scale).round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect()
}

fn invalid(msg: impl std::fmt::Display) -> FileFailure {
    FileFailure::new(
        FailureKind::InvalidData,
        format!("cannot decode the image: {msg}"),
    )
}

/// Whether the orientation swaps width and height.
fn swaps(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

impl Thumbnail {
    fn too_big(&self, w: u32, h: u32) -> Result<(), FileFailure> {
        if u64::from(w) * u64::from(h) > self.o.max_pixels {
            return Err(FileFailure::new(
                FailureKind::LimitExceeded,
                format!(
                    "the image declares {w}x{h} pixels, more than max_pixels ({}); refused as a possible decompression bomb",
                    self.o.max_pixels
                ),
            ));
        }
        Ok(())
    }

    /// The size the final (oriented) image should have, from the oriented
    /// source size; for fill and pad this is the box the content scales to.
    fn content_size(&self, w: u32, h: u32) -> (u32, u32) {
        let (tw, th) = (f64::from(self.o.width), f64::from(self.o.height));
        let (fw, fh) = (f64::from(w), f64::from(h));
        let mut s = match self.o.mode {
            Mode::Fit | Mode::Pad => (tw / fw).min(th / fh),
            Mode::Fill => (tw / fw).max(th / fh),
        };
        if !self.o.upscale && s > 1.0 {
            s = 1.0;
        }
        let cw = ((fw * s).round() as u32).max(1);
        let ch = ((fh * s).round() as u32).max(1);
        (cw, ch)
    }

    /// The EXIF orientation of a JPEG and the size, in stored (unoriented)
    /// pixels, that its decoded image must at least have.
    fn jpeg_target(&self, bytes: &[u8], w: u32, h: u32) -> (Orientation, (u32, u32)) {
        let orientation = exif::Reader::new()
            .read_from_container(&mut Cursor::new(bytes))
            .ok()
            .and_then(|e| {
                e.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
                    .and_then(|f| f.value.get_uint(0))
            })
            .and_then(|v| Orientation::from_exif(v as u8))
            .unwrap_or(Orientation::NoTransforms);
        let (ow, oh) = if swaps(orientation) { (h, w) } else { (w, h) };
        let (cw, ch) = self.content_size(ow, oh);
        // For fill the crop needs the covering size; content_size gives it.
        let want = if swaps(orientation) {
            (ch, cw)
        } else {
            (cw, ch)
        };
        (orientation, want)
    }

    /// Decodes a JPEG at the smallest DCT scale (M/8, M = 1..8) still at
    /// least the target size: with libjpeg-turbo, or, for what it refuses
    /// (damaged files it only warns about), with `jpeg-decoder`, whose
    /// verdict then stands.
    fn decode_jpeg(
        &self,
        bytes: &[u8],
    ) -> Result<(RgbImage, Orientation, (u32, u32)), FileFailure> {
        match self.decode_jpeg_turbo(bytes) {
            Ok(decoded) => Ok(decoded),
            Err(f) if f.kind == FailureKind::LimitExceeded => Err(f),
            Err(_) => self.decode_jpeg_rust(bytes),
        }
    }

    fn decode_jpeg_turbo(
        &self,
        bytes: &[u8],
    ) -> Result<(RgbImage, Orientation, (u32, u32)), FileFailure> {
        TURBO.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                let mut dec = turbojpeg::Decompressor::new().map_err(invalid)?;
                // A progressive JPEG of thousands of tiny scans is a CPU bomb.
                dec.set_scan_limit(MAX_SCANS).map_err(invalid)?;
                *slot = Some(dec);
            }
            let dec = slot.as_mut().expect("set above");
            let header = dec.read_header(bytes).map_err(invalid)?;
            // Print files (CMYK or YCCK): decoded to CMYK, then to RGB.
            let cmyk = matches!(
                header.colorspace,
                turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
            );
            let (w, h) = (
                u32::try_from(header.width).map_err(invalid)?,
                u32::try_from(header.height).map_err(invalid)?,
            );
            self.too_big(w, h)?;
            let (orientation, (rw, rh)) = self.jpeg_target(bytes, w, h);
            let factor = jpeg_scale(header.width, header.height, rw, rh);
            dec.set_scaling_factor(factor).map_err(invalid)?;
            let scaled = header.scaled(factor);
            let (format, depth) = if cmyk {
                (turbojpeg::PixelFormat::CMYK, 4)
            } else {
                (turbojpeg::PixelFormat::RGB, 3)
            };
            let mut image = turbojpeg::Image {
                pixels: if cmyk {
                    vec![0; depth * scaled.width * scaled.height]
                } else {
                    pixel_buffer(depth * scaled.width * scaled.height)
                },
                width: scaled.width,
                pitch: depth * scaled.width,
                height: scaled.height,
                format,
            };
            if let Err(e) = dec.decompress(bytes, image.as_deref_mut()) {
                recycle_pixels(image.pixels);
                return Err(invalid(e));
            }
            let pixels = if cmyk {
                let mut rgb = pixel_buffer(3 * scaled.width * scaled.height);
                adobe_cmyk_to_rgb(&image.pixels, &mut rgb);
                rgb
            } else {
                image.pixels
            };
            let img = RgbImage::from_raw(scaled.width as u32, scaled.height as u32, pixels)
                .ok_or_else(|| invalid("short pixel buffer"))?;
            Ok((img, orientation, (w, h)))
        })
    }

    fn decode_jpeg_rust(
        &self,
        bytes: &[u8],
    ) -> Result<(RgbImage, Orientation, (u32, u32)), FileFailure> {
        let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
        dec.read_info().map_err(invalid)?;
        let info = dec.info().ok_or_else(|| invalid("no image header"))?;
        let (w, h) = (u32::from(info.width), u32::from(info.height));
        self.too_big(w, h)?;
        let (orientation, (rw, rh)) = self.jpeg_target(bytes, w, h);
        dec.scale(rw.min(65535) as u16, rh.min(65535) as u16)
            .map_err(invalid)?;
        let pixels = dec.decode().map_err(invalid)?;
        let info = dec.info().ok_or_else(|| invalid("no image header"))?;
        let (dw, dh) = (u32::from(info.width), u32::from(info.height));
        let rgb = match info.pixel_format {
            jpeg_decoder::PixelFormat::RGB24 => pixels,
            jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
            jpeg_decoder::PixelFormat::L16 => pixels
                .chunks_exact(2)
                .flat_map(|c| [c[0], c[0], c[0]])
                .collect(),
            jpeg_decoder::PixelFormat::CMYK32 => {
                // jpeg-decoder hands back 255 minus what the file stores.
                let stored: Vec<u8> = pixels.iter().map(|&v| 255 - v).collect();
                let mut rgb = vec![0; stored.len() / 4 * 3];
                adobe_cmyk_to_rgb(&stored, &mut rgb);
                rgb
            }
        };
        let img = RgbImage::from_raw(dw, dh, rgb).ok_or_else(|| invalid("short pixel buffer"))?;
        Ok((img, orientation, (w, h)))
    }

    /// Any other format, with its ICC profile (see [`jpeg_icc_profile`]).
    fn decode_other(
        &self,
        path: &Path,
    ) -> Result<(RgbImage, Orientation, (u32, u32), Icc), FileFailure> {
        let file = crate::sandbox::open_regular(path)
            .map_err(|e| FileFailure::from_io(&e, "opening the image"))?;
        let mut reader = image::ImageReader::new(std::io::BufReader::new(file))
            .with_guessed_format()
            .map_err(|e| FileFailure::from_io(&e, "reading the image"))?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(self.max_alloc());
        reader.limits(limits);
        let tiff = reader.format() == Some(image::ImageFormat::Tiff);
        let mut dec = match reader.into_decoder() {
            Ok(dec) => dec,
            Err(image::ImageError::Unsupported(_)) if tiff => {
                let (img, orientation, size) = self.decode_tiff_samples(path)?;
                return Ok((img, orientation, size, None));
            }
            Err(e @ image::ImageError::Limits(_)) => {
                return Err(FileFailure::new(
                    FailureKind::LimitExceeded,
                    format!("image refused: {e}"),
                ))
            }
            Err(other) => return Err(invalid(other)),
        };
        let (w, h) = dec.dimensions();
        self.too_big(w, h)?;
        let orientation = dec.orientation().unwrap_or(Orientation::NoTransforms);
        let icc = dec
            .icc_profile()
            .ok()
            .flatten()
            .filter(|p| p.len() <= MAX_ICC_BYTES);
        let img = DynamicImage::from_decoder(dec).map_err(|e| match e {
            image::ImageError::Limits(_) => {
                FileFailure::new(FailureKind::LimitExceeded, format!("image refused: {e}"))
            }
            other => invalid(other),
        })?;
        let rgb = if img.color().has_alpha() {
            flatten(&img.to_rgba8(), self.background)
        } else {
            img.to_rgb8()
        };
        Ok((rgb, orientation, (w, h), icc))
    }

    /// The most a decoder may allocate: 8 bytes for each pixel allowed.
    fn max_alloc(&self) -> u64 {
        self.o.max_pixels.saturating_mul(8).min(4 << 30)
    }

    /// A TIFF whose samples the image crate does not take: one band of
    /// floats or of 32- and 64-bit integers (an elevation model, counts from
    /// a detector), or RGB of those. Read with the `tiff` crate and
    /// stretched from the smallest to the largest finite sample onto 0-255,
    /// as a viewer's auto-contrast shows it: clipped to 0-255 instead, a
    /// model in metres came out white and a 0-1 mask black.
    fn decode_tiff_samples(
        &self,
        path: &Path,
    ) -> Result<(RgbImage, Orientation, (u32, u32)), FileFailure> {
        use tiff::decoder::{Decoder, DecodingResult as D, Limits};
        let tiff_error = |e: tiff::TiffError| match e {
            tiff::TiffError::LimitsExceeded => FileFailure::new(
                FailureKind::LimitExceeded,
                "image refused: the TIFF needs more memory to decode than max_pixels allows",
            ),
            tiff::TiffError::IoError(e) => FileFailure::from_io(&e, "reading the image"),
            other => invalid(other),
        };
        let file = crate::sandbox::open_regular(path)
            .map_err(|e| FileFailure::from_io(&e, "opening the image"))?;
        let mut limits = Limits::default();
        limits.decoding_buffer_size = usize::try_from(self.max_alloc()).unwrap_or(usize::MAX);
        let mut dec = Decoder::new(std::io::BufReader::new(file))
            .map_err(tiff_error)?
            .with_limits(limits);
        let (w, h) = dec.dimensions().map_err(tiff_error)?;
        self.too_big(w, h)?;
        let channels = match dec.colortype().map_err(tiff_error)? {
            tiff::ColorType::Gray(_) | tiff::ColorType::Multiband { num_samples: 1, .. } => 1,
            tiff::ColorType::RGB(_) => 3,
            other => {
                return Err(invalid(format!(
                    "TIFF samples of {other:?} are not supported"
                )))
            }
        };
        let orientation = dec
            .get_tag_u32(tiff::tags::Tag::Orientation)
            .ok()
            .and_then(|v| u8::try_from(v).ok())
            .and_then(Orientation::from_exif)
            .unwrap_or(Orientation::NoTransforms);
        let bytes = match dec.read_image().map_err(tiff_error)? {
            D::U8(v) => stretch(&v, f64::from),
            D::U16(v) => stretch(&v, f64::from),
            D::U32(v) => stretch(&v, f64::from),
            D::U64(v) => stretch(&v, |x| x as f64),
            D::F16(v) => stretch(&v, f64::from),
            D::F32(v) => stretch(&v, f64::from),
            D::F64(v) => stretch(&v, |x| x),
            D::I8(v) => stretch(&v, f64::from),
            D::I16(v) => stretch(&v, f64::from),
            D::I32(v) => stretch(&v, f64::from),
            D::I64(v) => stretch(&v, |x| x as f64),
        };
        let rgb = if channels == 1 {
            image::GrayImage::from_raw(w, h, bytes).map(|g| DynamicImage::ImageLuma8(g).to_rgb8())
        } else {
            RgbImage::from_raw(w, h, bytes)
        };
        let rgb = rgb.ok_or_else(|| invalid("the TIFF holds fewer samples than its size needs"))?;
        Ok((rgb, orientation, (w, h)))
    }

    fn render(&self, ctx: &FileCtx<'_>, size: u64) -> Result<String, FileFailure> {
        let rel = Path::new(std::ffi::OsStr::from_bytes(ctx.rel));
        let Some(ext) = image_ext(rel) else {
            return Ok(not_an_image());
        };
        let (out_path, out_rel) = output_for(ctx.destination, ctx.path, rel, |name| {
            thumbnail_name(name, self.o.format, ctx.path.parent())
        })?;
        if out_path == ctx.path {
            return Err(FileFailure::new(
                FailureKind::InvalidData,
                "the thumbnail would replace its source; set a destination",
            ));
        }
        if self.o.existing != Existing::Overwrite && ctx.output_exists(&out_path) {
            if self.o.existing == Existing::Skip {
                return Ok(skipped_exists(&out_rel));
            }
            return Err(ctx.exists_failure(&out_path));
        }
        let (img, orientation, (sw, sh), icc) = if matches!(ext.as_str(), "jpg" | "jpeg" | "jpe") {
            // Read once, in one allocation of the file's size.
            let mut bytes = Vec::with_capacity(size.min(1 << 30) as usize + 1);
            crate::sandbox::open_regular(ctx.path)
                .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
                .map_err(|e| FileFailure::from_io(&e, "reading the image"))?;
            let (img, orientation, size) = self.decode_jpeg(&bytes)?;
            (img, orientation, size, jpeg_icc_profile(&bytes))
        } else {
            self.decode_other(ctx.path)?
        };
        let (ow, oh) = if swaps(orientation) {
            (sh, sw)
        } else {
            (sw, sh)
        };
        let (cw, ch) = self.content_size(ow, oh);
        // Final size of the resized content, oriented.
        let (fw, fh) = match self.o.mode {
            Mode::Fill => (cw.min(self.o.width), ch.min(self.o.height)),
            _ => (cw, ch),
        };
        // Resize in stored orientation, then orient the small result.
        let (rw, rh) = if swaps(orientation) {
            (fh, fw)
        } else {
            (fw, fh)
        };
        let (iw, ih) = img.dimensions();
        let small = if (iw, ih) == (rw, rh) {
            // Scaled on decode to the exact size: nothing left to resize.
            img
        } else {
            let src = fir::images::Image::from_vec_u8(iw, ih, img.into_raw(), fir::PixelType::U8x3)
                .map_err(|e| FileFailure::new(FailureKind::Internal, e.to_string()))?;
            let mut dst = fir::images::Image::new(rw, rh, fir::PixelType::U8x3);
            // What DCT scaling left is a reduction by less than 2 (any
            // M/8 > 1/8 that was not needed would have been taken):
            // Catmull-Rom's 4 taps per unit suffice there; bigger
            // reductions keep Lanczos3's 6 against aliasing.
            let reduction = (f64::from(iw) / f64::from(rw)).max(f64::from(ih) / f64::from(rh));
            let filter = if reduction <= 2.0 {
                fir::FilterType::CatmullRom
            } else {
                fir::FilterType::Lanczos3
            };
            let opts = fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Convolution(filter))
                .fit_into_destination(Some((0.5, 0.5)));
            let resized = fir::Resizer::new()
                .resize(&src, &mut dst, &opts)
                .map_err(|e| FileFailure::new(FailureKind::Internal, e.to_string()));
            recycle_pixels(src.into_vec());
            resized?;
            RgbImage::from_raw(rw, rh, dst.into_vec()).ok_or_else(|| invalid("resize"))?
        };
        let mut out_img = if orientation == Orientation::NoTransforms {
            small
        } else {
            let mut small = DynamicImage::ImageRgb8(small);
            small.apply_orientation(orientation);
            small.into_rgb8()
        };
        if self.o.mode == Mode::Pad {
            let mut canvas =
                RgbImage::from_pixel(self.o.width, self.o.height, image::Rgb(self.background));
            let x = (self.o.width - out_img.width()) / 2;
            let y = (self.o.height - out_img.height()) / 2;
            image::imageops::replace(&mut canvas, &out_img, i64::from(x), i64::from(y));
            out_img = canvas;
        }
        let mut out = AtomicFile::create(&out_path)?;
        {
            let mut w = BufWriter::new(out.file());
            let enc_err = |e: image::ImageError| match e {
                image::ImageError::IoError(io) => write_failure(&io, "writing the thumbnail"),
                other => FileFailure::new(
                    FailureKind::Internal,
                    format!("encoding the thumbnail: {other}"),
                ),
            };
            match self.o.format {
                OutFormat::Jpeg => {
                    let jpeg = encode_jpeg(&out_img, self.o.quality).map_err(|e| {
                        FileFailure::new(
                            FailureKind::Internal,
                            format!("encoding the thumbnail: {e}"),
                        )
                    })?;
                    let jpeg = match &icc {
                        Some(profile) => with_jpeg_icc(&jpeg, profile),
                        None => jpeg,
                    };
                    w.write_all(&jpeg)
                        .map_err(|e| write_failure(&e, "writing the thumbnail"))?;
                }
                OutFormat::Png => {
                    let mut enc = image::codecs::png::PngEncoder::new(&mut w);
                    if let Some(profile) = icc {
                        let _ = enc.set_icc_profile(profile);
                    }
                    out_img.write_with_encoder(enc).map_err(enc_err)?
                }
                OutFormat::Webp => {
                    let mut enc = image::codecs::webp::WebPEncoder::new_lossless(&mut w);
                    if let Some(profile) = icc {
                        let _ = enc.set_icc_profile(profile);
                    }
                    out_img.write_with_encoder(enc).map_err(enc_err)?
                }
            }
            w.flush()
                .map_err(|e| write_failure(&e, "writing the thumbnail"))?;
        }
        let skipped_result = skipped_exists(&out_rel);
        if out.publish(ctx.outputs, self.o.existing, skipped_result.clone(), None)?
            == Committed::Skipped
        {
            return Ok(skipped_result);
        }
        Ok(json!({
            "output": out_rel.to_string_lossy(),
            "width": out_img.width(),
            "height": out_img.height(),
            "source_width": ow,
            "source_height": oh,
        })
        .to_string())
    }
}

impl Task for Thumbnail {
    fn files_per_batch(&self) -> usize {
        FILES_PER_BATCH
    }

    fn process(&self, ctx: &FileCtx<'_>) -> FileOutcome {
        FileOutcome::sized(ctx, "opening the image", |size| self.render(ctx, size))
    }

    fn skipped_by_name(&self, rel: &Path) -> Option<String> {
        image_ext(rel).is_none().then(not_an_image)
    }

    /// Without the source's folder: an object staged for `process` is
    /// alone in its folder, so no sibling changes its name there either.
    fn planned_output(&self, rel: &Path) -> Option<std::path::PathBuf> {
        image_ext(rel)?;
        Some(rel.with_file_name(thumbnail_name(rel.file_name()?, self.o.format, None)))
    }

    fn account(
        &self,
        agg: &mut Aggregate,
        _rel: &[u8],
        size: u64,
        r: &Result<String, FileFailure>,
    ) {
        agg.files += 1;
        match r {
            Err(_) => agg.failed += 1,
            Ok(j) if j.contains("\"skipped\"") => agg.count("skipped", 1),
            Ok(_) => {
                agg.count("thumbnails", 1);
                agg.count("bytes_in", size);
            }
        }
    }

    fn summarize(&self, agg: &Aggregate) -> serde_json::Value {
        let c = |k: &str| agg.counters.get(k).copied().unwrap_or(0);
        json!({"files": agg.files, "failed": agg.failed, "thumbnails": c("thumbnails"),
               "skipped": c("skipped"), "bytes_in": c("bytes_in")})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(o: &str, root: &Path, rel: &str, dest: &Path) -> Result<serde_json::Value, FileFailure> {
        build(o)
            .unwrap()
            .process(&FileCtx {
                path: &root.join(rel),
                rel: rel.as_bytes(),
                known_size: None,
                destination: Some(dest),
                outputs: None,
                elsewhere: None,
                cancel: None,
                staged: false,
            })
            .result
            .map(|j| serde_json::from_str(&j).unwrap())
    }

    #[test]
    fn icc_profiles_go_into_jpeg_app2_segments_and_come_back_whole() {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
            .encode_image(&gradient(32, 32))
            .unwrap();
        assert_eq!(jpeg_icc_profile(&jpeg), None);
        // One segment, and one that needs three (65,519 bytes each at most).
        for len in [600, 150_000] {
            let profile: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let tagged = with_jpeg_icc(&jpeg, &profile);
            assert_eq!(jpeg_icc_profile(&tagged).as_deref(), Some(&profile[..]));
            // Still a JPEG every decoder reads.
            assert_eq!(image::load_from_memory(&tagged).unwrap().width(), 32);
        }
        // A profile missing one of its segments is not used.
        let profile = vec![7u8; 150_000];
        let tagged = with_jpeg_icc(&jpeg, &profile);
        let second = tagged
            .windows(14)
            .position(|w| w == b"ICC_PROFILE\0\x02\x03")
            .unwrap();
        let mut broken = tagged.clone();
        broken[second + 12] = 9; // sequence number 9 of 3
        assert_eq!(jpeg_icc_profile(&broken), None);
    }

    #[test]
    fn a_thumbnail_keeps_its_source_colour_profile_in_every_format() {
        // Not a real profile: what matters is that the bytes go across.
        let profile: Vec<u8> = (0..3000).map(|i| (i % 253) as u8).collect();
        let src = tempfile::tempdir().unwrap();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&gradient(300, 200))
            .unwrap();
        std::fs::write(src.path().join("p3.jpg"), with_jpeg_icc(&jpeg, &profile)).unwrap();
        let mut png = image::codecs::png::PngEncoder::new(
            std::fs::File::create(src.path().join("p3.png")).unwrap(),
        );
        png.set_icc_profile(profile.clone()).unwrap();
        png.write_image(
            gradient(300, 200).as_raw(),
            300,
            200,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
        for format in ["jpeg", "png", "webp"] {
            let dest = tempfile::tempdir().unwrap();
            let dest = dest.path().canonicalize().unwrap();
            let options = format!(r#"{{"width":100,"height":100,"format":"{format}"}}"#);
            for rel in ["p3.jpg", "p3.png"] {
                let out = run(&options, src.path(), rel, &dest).unwrap();
                let path = dest.join(out["output"].as_str().unwrap());
                let mut dec = image::ImageReader::open(&path)
                    .unwrap()
                    .with_guessed_format()
                    .unwrap()
                    .into_decoder()
                    .unwrap();
                assert_eq!(
                    dec.icc_profile().unwrap(),
                    Some(profile.clone()),
                    "{rel} -> {format}"
                );
            }
        }
    }

    #[test]
    fn transparent_pixels_take_the_background_colour() {
        // Transparent black around an opaque red square, as image editors
        // export a logo; half-transparent blue in one corner.
        let mut img = image::RgbaImage::from_pixel(100, 100, image::Rgba([0, 0, 0, 0]));
        for (x, y, px) in img.enumerate_pixels_mut() {
            if (25..75).contains(&x) && (25..75).contains(&y) {
                *px = image::Rgba([255, 0, 0, 255]);
            } else if x < 10 && y < 10 {
                *px = image::Rgba([0, 0, 255, 128]);
            }
        }
        let src = tempfile::tempdir().unwrap();
        img.save(src.path().join("logo.png")).unwrap();
        for (options, background) in [
            (r#"{"width":50,"height":50}"#, [255u8, 255, 255]),
            (
                r##"{"width":50,"height":50,"background":"#00ff00"}"##,
                [0, 255, 0],
            ),
        ] {
            let dest = tempfile::tempdir().unwrap();
            let dest = dest.path().canonicalize().unwrap();
            run(options, src.path(), "logo.png", &dest).unwrap();
            let out = image::open(dest.join("logo.png.jpg")).unwrap().to_rgb8();
            let near =
                |p: [u8; 3], want: [u8; 3]| p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 8);
            let edge = out.get_pixel(45, 25).0;
            assert!(near(edge, background), "{options}: {edge:?}");
            let centre = out.get_pixel(25, 25).0;
            assert!(near(centre, [255, 0, 0]), "{centre:?}");
            let half = out.get_pixel(1, 1).0;
            let mixed = background.map(|c| ((u16::from(c) * 127) / 255) as u8);
            let want = [mixed[0], mixed[1], mixed[2].saturating_add(128)];
            assert!(near(half, want), "{options}: {half:?} vs {want:?}");
        }
    }

    #[test]
    fn a_cmyk_jpeg_keeps_its_colours_by_both_decoders() {
        // Stored as Adobe software stores CMYK (inverted: 255 is no ink):
        // no cyan, half magenta, more yellow, no black, the colour Pillow
        // reads as (255, 205, 155). It came out black before.
        let (w, h) = (64usize, 48usize);
        let stored: Vec<u8> = [255u8, 205, 155, 255].repeat(w * h);
        let jpeg = turbojpeg::Compressor::new()
            .and_then(|mut c| {
                c.set_quality(95)?;
                c.set_subsamp(turbojpeg::Subsamp::None)?;
                c.compress_to_vec(turbojpeg::Image {
                    pixels: stored.as_slice(),
                    width: w,
                    pitch: 4 * w,
                    height: h,
                    format: turbojpeg::PixelFormat::CMYK,
                })
            })
            .unwrap();
        let task = Thumbnail {
            o: parse_options(r#"{"width":32,"height":32}"#).unwrap(),
            background: [255, 255, 255],
        };
        let (turbo, _, size) = task.decode_jpeg_turbo(&jpeg).unwrap();
        let (rust, _, _) = task.decode_jpeg_rust(&jpeg).unwrap();
        assert_eq!(size, (64, 48));
        for img in [turbo, rust] {
            let px = img.get_pixel(img.width() / 2, img.height() / 2).0;
            for (got, want) in px.iter().zip([255u8, 205, 155]) {
                assert!(got.abs_diff(want) <= 3, "{px:?}");
            }
        }
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        })
    }

    /// A JPEG with an EXIF APP1 segment holding only Orientation.
    fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(img)
            .unwrap();
        let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01".to_vec();
        tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]);
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\x00\x00".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn fit_fill_pad_sizes_and_exif_rotation() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        // 1600x1200 stored, orientation 6 (rotate 90): displayed 1200x1600.
        std::fs::write(
            src.path().join("r.jpg"),
            jpeg_with_orientation(&gradient(1600, 1200), 6),
        )
        .unwrap();
        let v = run(r#"{"width":300,"height":300}"#, src.path(), "r.jpg", &dest).unwrap();
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(225), Some(300))
        );
        let out = image::open(dest.join("r.jpg")).unwrap();
        assert_eq!((out.width(), out.height()), (225, 300));

        gradient(800, 400).save(src.path().join("p.png")).unwrap();
        let v = run(
            r#"{"width":200,"height":200,"mode":"fill","format":"png"}"#,
            src.path(),
            "p.png",
            &dest,
        )
        .unwrap();
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(200), Some(200))
        );
        let v = run(
            r#"{"width":200,"height":200,"mode":"pad","format":"webp","existing":"overwrite"}"#,
            src.path(),
            "p.png",
            &dest,
        )
        .unwrap();
        assert_eq!(v["output"], "p.png.webp");
        let out = image::open(dest.join("p.png.webp")).unwrap().to_rgb8();
        assert_eq!(out.dimensions(), (200, 200));
        assert_eq!(out.get_pixel(100, 5).0, [255, 255, 255], "padded band");

        let gif = src.path().join("g.gif");
        DynamicImage::ImageRgb8(gradient(64, 32))
            .save(&gif)
            .unwrap();
        let v = run(r#"{"width":32,"height":32}"#, src.path(), "g.gif", &dest).unwrap();
        assert_eq!(v["width"], 32);
        DynamicImage::ImageRgb8(gradient(64, 32))
            .save(src.path().join("t.tiff"))
            .unwrap();
        run("", src.path(), "t.tiff", &dest).unwrap();
    }

    #[test]
    fn png_bomb_truncated_jpeg_and_non_images() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        // A PNG whose header declares 100000x100000 pixels.
        let mut png = Vec::new();
        gradient(8, 8)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        std::fs::write(src.path().join("bomb.png"), &png).unwrap();
        let err = run("", src.path(), "bomb.png", &dest).unwrap_err();
        assert!(
            matches!(
                err.kind,
                FailureKind::LimitExceeded | FailureKind::InvalidData
            ),
            "{err:?}"
        );

        let jpeg = jpeg_with_orientation(&gradient(400, 300), 1);
        std::fs::write(src.path().join("cut.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
        let err = run("", src.path(), "cut.jpg", &dest).unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidData, "{}", err.message);
        std::fs::write(src.path().join("notes.txt"), b"x").unwrap();
        assert!(run("", src.path(), "notes.txt", &dest).unwrap()["skipped"].is_string());
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    }

    #[test]
    fn float_and_32_bit_tiffs_are_stretched_onto_their_own_range() {
        use tiff::encoder::{colortype, TiffEncoder};
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        let (w, h) = (200u32, 100u32);
        // An elevation model in metres, rising from west to east, with one
        // pixel of no data (NaN); and the same ramp as signed 32-bit counts.
        let mut dem: Vec<f32> = (0..w * h).map(|i| 1000.0 + (i % w) as f32 * 10.0).collect();
        dem[5] = f32::NAN;
        let counts: Vec<i32> = (0..w * h).map(|i| -70_000 + (i % w) as i32 * 700).collect();
        let mut f = std::fs::File::create(src.path().join("dem.tif")).unwrap();
        TiffEncoder::new(&mut f)
            .unwrap()
            .write_image::<colortype::Gray32Float>(w, h, &dem)
            .unwrap();
        let mut f = std::fs::File::create(src.path().join("counts.tiff")).unwrap();
        TiffEncoder::new(&mut f)
            .unwrap()
            .write_image::<colortype::GrayI32>(w, h, &counts)
            .unwrap();
        for name in ["dem.tif", "counts.tiff"] {
            let v = run(
                r#"{"width":50,"height":50,"format":"png"}"#,
                src.path(),
                name,
                &dest,
            )
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(
                (v["width"].as_u64(), v["height"].as_u64()),
                (Some(50), Some(25))
            );
            let out = image::open(dest.join(v["output"].as_str().unwrap()))
                .unwrap()
                .to_luma8();
            let (west, east) = (out.get_pixel(0, 12)[0], out.get_pixel(49, 12)[0]);
            assert!(west < 10 && east > 245, "{name}: west {west}, east {east}");
        }
        let v = run(r#"{"max_pixels":19999}"#, src.path(), "dem.tif", &dest);
        assert_eq!(v.unwrap_err().kind, FailureKind::LimitExceeded);
    }

    #[test]
    fn sources_differing_only_by_extension_get_distinct_thumbnails() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dest = dest.path().canonicalize().unwrap();
        std::fs::create_dir(src.path().join("album")).unwrap();
        // Four sources whose names would collide under "stem + .jpg".
        let sources = [
            ("album/a.jpg", 100u32),
            ("album/a.png", 200),
            ("album/a.webp", 300),
            ("album/a.png.jpg", 400),
        ];
        for (rel, w) in sources {
            let img = DynamicImage::ImageRgb8(gradient(w, 50));
            let fmt = image::ImageFormat::from_path(rel).unwrap();
            img.save_with_format(src.path().join(rel), fmt).unwrap();
        }
        let mut outputs = Vec::new();
        for (rel, _) in sources {
            let v = run(r#"{"width":1000,"height":1000}"#, src.path(), rel, &dest).unwrap();
            outputs.push(v["output"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            outputs,
            [
                "album/a.jpg",
                "album/a.png.jpg",
                "album/a.webp.jpg",
                "album/a.png.jpg.jpg"
            ]
        );
        // Each thumbnail is its own source's (widths differ), none skipped.
        for ((_, w), out) in sources.iter().zip(&outputs) {
            assert_eq!(image::open(dest.join(out)).unwrap().width(), *w, "{out}");
        }
        // An output format's own extension keeps the name, any case.
        let name = thumbnail_name(OsStr::new("b.JPEG"), OutFormat::Jpeg, None);
        assert_eq!(name, "b.JPEG");
        let name = thumbnail_name(OsStr::new("b.jpg"), OutFormat::Png, None);
        assert_eq!(name, "b.jpg.png");
    }

    #[test]
    fn jpegs_are_shrunk_on_decode_by_libjpeg_turbo() {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&gradient(1600, 1200))
            .unwrap();
        let task = Thumbnail {
            o: parse_options(r#"{"width":200,"height":200}"#).unwrap(),
            background: [255, 255, 255],
        };
        // 1/8 is the largest reduction still covering 200x150.
        let (img, _, source) = task.decode_jpeg_turbo(&jpeg).unwrap();
        assert_eq!((img.dimensions(), source), ((200, 150), (1600, 1200)));
        let (slow, _, _) = task.decode_jpeg_rust(&jpeg).unwrap();
        assert_eq!(slow.dimensions(), img.dimensions(), "same scale either way");
        // What libjpeg-turbo refuses falls back to jpeg-decoder's verdict.
        let err = task.decode_jpeg(&jpeg[..jpeg.len() / 3]).unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidData);
    }
}
