//! Charts for `--plot`: the confusion matrix of `cifar10 eval` and an image beside its top-k
//! bars for `cifar10 classify`, as PNG, or SVG when the file name ends in `.svg`.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (plotters' `ab_glyph` feature), so
//! a chart needs no system fonts or fontconfig. Files are written atomically, and never over
//! an input of the command, a link or anything that is not a regular file.
//!
//! ```
//! use cifar10_cli::plot::{render, ConfusionChart, Format};
//! let names: Vec<String> = model_format::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
//! let mut confusion = [[0usize; 10]; 10];
//! confusion[3][3] = 9;
//! confusion[3][5] = 1;
//! let chart = ConfusionChart { confusion: &confusion, class_names: &names, title: "test".into() };
//! let png = render(&chart, Format::Png)?;
//! assert!(png.starts_with(b"\x89PNG"));
//! # Ok::<(), cifar10_cli::plot::PlotError>(())
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Once;

use image::ImageEncoder;
use model_format::arch::{IMAGE_SIZE, INPUT_SIZE};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The family name the bundled font is registered under.
const FONT: &str = "sans-serif";
static REGISTER_FONT: Once = Once::new();

/// Why a chart could not be drawn or saved; names the `--plot` file at fault.
#[derive(Debug)]
pub enum PlotError {
    /// The file name ends in neither `.png` nor `.svg`.
    Format { path: PathBuf },
    /// The path may not be written: an input of the command, a link, a folder, a device…
    /// (`model_format::atomic::check_output`; the message names `--plot` and the path).
    Refused(io::Error),
    /// Drawing failed (a plotters error).
    Draw(String),
    /// Writing the file failed.
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotError::Format { path } => {
                write!(f, "--plot {}: the file name must end in .png or .svg", path.display())
            }
            PlotError::Refused(why) => write!(f, "{why}"),
            PlotError::Draw(why) => write!(f, "cannot draw the chart: {why}"),
            PlotError::Io { path, source } => write!(f, "--plot {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PlotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlotError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn draw_error(e: impl fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// The file format of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    /// The format a file name asks for: `.svg` or `.png` (any case).
    ///
    /// ```
    /// use cifar10_cli::plot::Format;
    /// assert_eq!(Format::for_path("out/confusion.SVG".as_ref()).unwrap(), Format::Svg);
    /// assert!(Format::for_path("confusion.jpg".as_ref()).is_err());
    /// ```
    pub fn for_path(path: &Path) -> Result<Format, PlotError> {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(PlotError::Format { path: path.into() }),
        }
    }
}

/// Something drawable at a fixed size.
pub trait Chart {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws onto `area` (white already).
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
}

/// Draws `chart` and encodes it as PNG or SVG.
pub fn render(chart: &impl Chart, format: Format) -> Result<Vec<u8>, PlotError> {
    REGISTER_FONT.call_once(|| {
        let font = include_bytes!("../fonts/DejaVuSans.ttf");
        // The bundled file is a valid TrueType font; a failure here would be a build mistake.
        if plotters::style::register_font(FONT, FontStyle::Normal, font).is_err() {
            eprintln!("warning: the bundled font could not be loaded; chart text will be missing");
        }
    });
    let (width, height) = chart.size();
    match format {
        Format::Png => {
            let mut pixels = vec![0u8; width as usize * height as usize * 3];
            {
                let area = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
                area.fill(&WHITE).map_err(draw_error)?;
                chart.draw(&area)?;
                area.present().map_err(draw_error)?;
            }
            let mut png = Vec::new();
            image::codecs::png::PngEncoder::new(&mut png)
                .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
                .map_err(draw_error)?;
            Ok(png)
        }
        Format::Svg => {
            let mut svg = String::new();
            {
                let area = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
                area.fill(&WHITE).map_err(draw_error)?;
                chart.draw(&area)?;
                area.present().map_err(draw_error)?;
            }
            Ok(svg.into_bytes())
        }
    }
}

/// Checks, before any long work, that `path` may be written: a `.png` or `.svg` name, not
/// one of the command's `inputs` (model, data files, images; same file through any link),
/// and either absent or a regular file (a link, folder or device is refused rather than
/// silently replaced): the rule of every output of every command.
pub fn check_output(path: &Path, inputs: &[&Path]) -> Result<Format, PlotError> {
    // The input check first: "this is your model" says more than "wrong extension".
    model_format::atomic::check_output("--plot", path, inputs).map_err(PlotError::Refused)?;
    Format::for_path(path)
}

/// Draws `chart` into `path` (PNG or SVG by its name), replacing it atomically, after the
/// checks of [`check_output`].
pub fn save(chart: &impl Chart, path: &Path, inputs: &[&Path]) -> Result<(), PlotError> {
    let format = check_output(path, inputs)?;
    let bytes = render(chart, format)?;
    model_format::atomic::write_file(path, &bytes).map_err(|source| PlotError::Io { path: path.into(), source })
}

fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Normal)
}

fn text_style(size: f64, color: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle { font: font(size), color: color.to_backend_color(), pos: Pos::new(h, v) }
}

const INK: RGBColor = RGBColor(27, 31, 36);
const MUTED: RGBColor = RGBColor(87, 96, 106);
const BAR: RGBColor = RGBColor(59, 130, 196);
const TRACK: RGBColor = RGBColor(238, 242, 246);

/// White to deep blue as `share` goes from 0 to 1.
fn shade(share: f64) -> RGBColor {
    let s = share.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * s).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 69.0), mix(255.0, 148.0))
}

fn rect<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    (w, h): (i32, i32),
    style: ShapeStyle,
) -> Result<(), PlotError> {
    area.draw(&Rectangle::new([(x, y), (x + w, y + h)], style)).map_err(draw_error)
}

fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &str,
    at: (i32, i32),
    style: &TextStyle,
) -> Result<(), PlotError> {
    area.draw_text(s, style, at).map_err(draw_error)
}

/// The confusion matrix (rows: true class, columns: predicted), each cell shaded by its share
/// of the row, with the per-class accuracy in a column on the right.
pub struct ConfusionChart<'a> {
    pub confusion: &'a [[usize; model_format::NUM_CLASSES]; model_format::NUM_CLASSES],
    pub class_names: &'a [String],
    pub title: String,
}

const CELL: i32 = 76;
const LEFT: i32 = 130;
const TOP: i32 = 96;

impl Chart for ConfusionChart<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.confusion.len() as i32;
        ((LEFT + n * CELL + 190) as u32, (TOP + n * CELL + 80) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let n = self.confusion.len() as i32;
        let grid_right = LEFT + n * CELL;
        text(area, &self.title, (24, 24), &text_style(22.0, INK, HPos::Left, VPos::Center))?;
        let axis = text_style(16.0, MUTED, HPos::Center, VPos::Center);
        text(area, "predicted class →", (LEFT + n * CELL / 2, TOP + n * CELL + 56), &axis)?;
        text(area, "true class ↓", (LEFT / 2, TOP - 24), &axis)?;
        text(area, "accuracy", (grid_right + 95, TOP - 24), &axis)?;
        let name_style = text_style(15.0, INK, HPos::Center, VPos::Center);
        let row_name_style = text_style(15.0, INK, HPos::Right, VPos::Center);
        for (row, counts) in self.confusion.iter().enumerate() {
            let y = TOP + row as i32 * CELL;
            let total: usize = counts.iter().sum();
            let name = self.class_names.get(row).map_or("?", String::as_str);
            text(area, name, (LEFT - 10, y + CELL / 2), &row_name_style)?;
            for (col, &count) in counts.iter().enumerate() {
                let x = LEFT + col as i32 * CELL;
                let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
                rect(area, (x, y), (CELL, CELL), shade(share).filled())?;
                rect(area, (x, y), (CELL, CELL), RGBColor(208, 215, 222).stroke_width(1))?;
                let ink = if share > 0.5 { WHITE } else { INK };
                text(
                    area,
                    &count.to_string(),
                    (x + CELL / 2, y + CELL / 2),
                    &text_style(17.0, ink, HPos::Center, VPos::Center),
                )?;
            }
            self.draw_accuracy(area, (grid_right + 20, y), counts[row], total)?;
        }
        for (col, name) in self.class_names.iter().enumerate().take(n as usize) {
            text(area, name, (LEFT + col as i32 * CELL + CELL / 2, TOP + n * CELL + 20), &name_style)?;
        }
        Ok(())
    }
}

impl ConfusionChart<'_> {
    /// One row's accuracy: a bar and its value, right of the matrix.
    fn draw_accuracy<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        (x, y): (i32, i32),
        correct: usize,
        total: usize,
    ) -> Result<(), PlotError> {
        let accuracy = if total == 0 { 0.0 } else { correct as f64 / total as f64 };
        let width = 90;
        rect(area, (x, y + CELL / 2 - 12), (width, 24), TRACK.filled())?;
        rect(area, (x, y + CELL / 2 - 12), ((accuracy * width as f64).round() as i32, 24), BAR.filled())?;
        let label = format!("{:.1}%", 100.0 * accuracy);
        text(area, &label, (x + width + 8, y + CELL / 2), &text_style(15.0, INK, HPos::Left, VPos::Center))
    }
}

/// An image as the model sees it (32×32, enlarged without smoothing, the central 24×24 crop
/// outlined) beside its top-k classes as horizontal bars.
pub struct TopKChart<'a> {
    /// Interleaved RGB, 32×32 (what the decoder hands the classifier).
    pub image_hwc: &'a [u8],
    /// `(label, probability)`, most likely first.
    pub ranked: Vec<(String, f32)>,
    pub title: String,
}

const PIXEL: i32 = 9;
const IMAGE_AT: (i32, i32) = (24, 70);

impl Chart for TopKChart<'_> {
    fn size(&self) -> (u32, u32) {
        let image_bottom = IMAGE_AT.1 + IMAGE_SIZE as i32 * PIXEL + 40;
        let bars_bottom = IMAGE_AT.1 + 20 + self.ranked.len() as i32 * 44;
        (860, image_bottom.max(bars_bottom) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        text(area, &self.title, (24, 30), &text_style(20.0, INK, HPos::Left, VPos::Center))?;
        self.draw_image(area)?;
        let x = IMAGE_AT.0 + IMAGE_SIZE as i32 * PIXEL + 40;
        let label_style = text_style(17.0, INK, HPos::Right, VPos::Center);
        let value_style = text_style(17.0, INK, HPos::Left, VPos::Center);
        let track = 300;
        for (i, (label, probability)) in self.ranked.iter().enumerate() {
            let y = IMAGE_AT.1 + 10 + i as i32 * 44;
            text(area, label, (x + 110, y + 15), &label_style)?;
            rect(area, (x + 120, y), (track, 30), TRACK.filled())?;
            let filled = (f64::from(*probability) * track as f64).round() as i32;
            rect(area, (x + 120, y), (filled, 30), BAR.filled())?;
            text(area, &format!("{:.1}%", 100.0 * probability), (x + 130 + track, y + 15), &value_style)?;
        }
        Ok(())
    }
}

impl TopKChart<'_> {
    fn draw_image<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let (x0, y0) = IMAGE_AT;
        for (i, rgb) in self.image_hwc.chunks_exact(3).enumerate().take(IMAGE_SIZE * IMAGE_SIZE) {
            let (x, y) = ((i % IMAGE_SIZE) as i32, (i / IMAGE_SIZE) as i32);
            let color = RGBColor(rgb[0], rgb[1], rgb[2]);
            rect(area, (x0 + x * PIXEL, y0 + y * PIXEL), (PIXEL, PIXEL), color.filled())?;
        }
        let offset = ((IMAGE_SIZE - INPUT_SIZE) / 2) as i32 * PIXEL;
        let side = INPUT_SIZE as i32 * PIXEL;
        let outline = RGBColor(255, 196, 0).stroke_width(2);
        rect(area, (x0 + offset, y0 + offset), (side, side), outline)?;
        let caption = "32×32 as classified; box: central 24×24 crop";
        let bottom = y0 + IMAGE_SIZE as i32 * PIXEL + 18;
        text(area, caption, (x0, bottom), &text_style(13.0, MUTED, HPos::Left, VPos::Center))
    }
}
