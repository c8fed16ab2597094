//! A minimal RGB raster: rectangles, lines and bitmap-font text, encoded to PNG.

use crate::font;

/// An 8-bit RGB colour.
pub(crate) type Rgb = [u8; 3];

/// An axis-aligned pixel rectangle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rect {
    pub(crate) x0: i64,
    pub(crate) y0: i64,
    /// Inclusive.
    pub(crate) x1: i64,
    /// Inclusive.
    pub(crate) y1: i64,
}

impl Rect {
    pub(crate) fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }
}

/// Row-major RGB pixels; drawing outside the canvas is silently clipped.
pub(crate) struct Canvas {
    pub(crate) width: u32,
    pub(crate) height: u32,
    data: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub(crate) fn new(width: u32, height: u32, background: Rgb) -> Self {
        let data = background.repeat(width as usize * height as usize);
        Canvas {
            width,
            height,
            data,
        }
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            None
        } else {
            Some((y as usize * self.width as usize + x as usize) * 3)
        }
    }

    pub(crate) fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(i) = self.index(x, y) {
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    pub(crate) fn get(&self, x: i64, y: i64) -> Option<Rgb> {
        self.index(x, y)
            .map(|i| [self.data[i], self.data[i + 1], self.data[i + 2]])
    }

    pub(crate) fn fill_rect(&mut self, r: Rect, c: Rgb) {
        let x0 = r.x0.max(0);
        let y0 = r.y0.max(0);
        let x1 = r.x1.min(self.width as i64 - 1);
        let y1 = r.y1.min(self.height as i64 - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.set(x, y, c);
            }
        }
    }

    pub(crate) fn hline(&mut self, x0: i64, x1: i64, y: i64, c: Rgb) {
        self.fill_rect(
            Rect {
                x0: x0.min(x1),
                y0: y,
                x1: x0.max(x1),
                y1: y,
            },
            c,
        );
    }

    pub(crate) fn vline(&mut self, x: i64, y0: i64, y1: i64, c: Rgb) {
        self.fill_rect(
            Rect {
                x0: x,
                y0: y0.min(y1),
                x1: x,
                y1: y0.max(y1),
            },
            c,
        );
    }

    pub(crate) fn stroke_rect(&mut self, r: Rect, c: Rgb) {
        self.hline(r.x0, r.x1, r.y0, c);
        self.hline(r.x0, r.x1, r.y1, c);
        self.vline(r.x0, r.y0, r.y1, c);
        self.vline(r.x1, r.y0, r.y1, c);
    }

    /// A `thickness`-pixel line from `a` to `b`, drawn only inside `clip`.
    pub(crate) fn line(
        &mut self,
        a: (i64, i64),
        b: (i64, i64),
        thickness: i64,
        c: Rgb,
        clip: Rect,
    ) {
        let (mut x, mut y) = a;
        let dx = (b.0 - a.0).abs();
        let dy = -(b.1 - a.1).abs();
        let sx = if a.0 < b.0 { 1 } else { -1 };
        let sy = if a.1 < b.1 { 1 } else { -1 };
        let mut err = dx + dy;
        let off = (thickness - 1) / 2;
        loop {
            for oy in 0..thickness {
                for ox in 0..thickness {
                    let (px, py) = (x + ox - off, y + oy - off);
                    if clip.contains(px, py) {
                        self.set(px, py, c);
                    }
                }
            }
            if x == b.0 && y == b.1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Horizontal text with its top-left corner at `(x, y)`.
    pub(crate) fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, c: Rgb) {
        self.glyphs(text, scale, c, |along, col, row| (x + along + col, y + row));
    }

    /// Text rotated 90° anticlockwise (reading bottom to top); `(x, y)` is the bottom-left corner
    /// of the rotated text's bounding box.
    pub(crate) fn text_vertical(&mut self, x: i64, y: i64, text: &str, scale: u32, c: Rgb) {
        let s = scale.max(1) as i64;
        self.glyphs(text, scale, c, |along, col, row| {
            (x + row, y - along - col - (s - 1))
        });
    }

    /// Paints every set font pixel of `text` as a `scale`-sized square. `place` maps the
    /// character's offset along the text and the pixel's glyph column and row (all already
    /// scaled) to the square's top-left corner, which is all that differs between orientations.
    fn glyphs(
        &mut self,
        text: &str,
        scale: u32,
        c: Rgb,
        place: impl Fn(i64, i64, i64) -> (i64, i64),
    ) {
        let s = scale.max(1) as i64;
        for (i, ch) in text.chars().enumerate() {
            let along = i as i64 * font::ADVANCE as i64 * s;
            for col in 0..font::GLYPH_W {
                for row in 0..font::GLYPH_ROWS {
                    if font::pixel(ch, col, row) {
                        let (px, py) = place(along, col as i64 * s, row as i64 * s);
                        self.fill_rect(
                            Rect {
                                x0: px,
                                y0: py,
                                x1: px + s - 1,
                                y1: py + s - 1,
                            },
                            c,
                        );
                    }
                }
            }
        }
    }

    /// The canvas as PNG file bytes (8-bit RGB).
    pub(crate) fn encode_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            // Dimensions are clamped to valid, non-zero values and the buffer matches them
            // exactly, and writing into a Vec cannot fail, so encoding cannot fail.
            let mut writer = encoder
                .write_header()
                .expect("PNG header for valid dimensions");
            writer
                .write_image_data(&self.data)
                .expect("PNG data matching the header");
            writer.finish().expect("PNG finish into memory");
        }
        out
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub(crate) fn text_w(text: &str, scale: u32) -> i64 {
    font::text_width(text) as i64 * scale as i64
}

/// Height in pixels of a line of text drawn at `scale` (descenders excluded).
pub(crate) fn text_h(scale: u32) -> i64 {
    font::GLYPH_H as i64 * scale as i64
}
