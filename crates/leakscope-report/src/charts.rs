//! Charts as SVG text, drawn by plotters' SVG backend without a font
//! backend: labels are `<text>` elements the browser renders, so there is
//! no system font dependency and nothing to embed. plotters escapes every
//! title and label it writes (variant names are outside text), which is
//! why the page may print the SVG as it is.

use leakscope_analysis::{Axis, Unit};
use plotters::prelude::*;

/// One line on a chart.
pub struct Line<'a> {
    pub label: String,
    pub color: RGBColor,
    pub points: &'a [(f64, f64)],
    /// The fitted trend over the analysis window, drawn dashed-looking
    /// (thin) in the same colour.
    pub fit: Option<((f64, f64), (f64, f64))>,
}

pub const LEAKY: RGBColor = RGBColor(200, 40, 40);
pub const FIXED: RGBColor = RGBColor(30, 100, 200);
pub const OTHER: [RGBColor; 4] = [
    RGBColor(40, 150, 60),
    RGBColor(150, 80, 180),
    RGBColor(220, 140, 20),
    RGBColor(90, 90, 90),
];

/// Values scaled to one readable unit for the whole chart.
fn scale(unit: Unit, max: f64) -> (f64, &'static str) {
    match unit {
        Unit::Count => (1.0, ""),
        Unit::Bytes if max >= 1024.0 * 1024.0 * 1024.0 => (1024.0 * 1024.0 * 1024.0, "GiB"),
        Unit::Bytes if max >= 1024.0 * 1024.0 => (1024.0 * 1024.0, "MiB"),
        Unit::Bytes if max >= 1024.0 => (1024.0, "KiB"),
        Unit::Bytes => (1.0, "B"),
    }
}

/// Renders one chart; `None` when there is nothing to draw.
pub fn chart(title: &str, unit: Unit, axis: Axis, lines: &[Line]) -> Option<String> {
    let all = || lines.iter().flat_map(|l| l.points.iter());
    all().next()?;
    let (xmin, xmax) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (ymin, ymax) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (div, suffix) = scale(unit, ymax.abs().max(ymin.abs()));
    let (y0, y1) = (ymin.min(0.0) / div, (ymax / div) * 1.05 + f64::EPSILON);
    let x1 = if xmax > xmin { xmax } else { xmin + 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 300)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(xmin..x1, y0..y1)
            .ok()?;
        let x_desc = axis.name();
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(suffix)
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 11))
            .draw()
            .ok()?;
        for line in lines {
            let color = line.color;
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().map(|p| (p.0, p.1 / div)),
                    color.stroke_width(2),
                ))
                .ok()?
                .label(line.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            if let Some(((fx0, fy0), (fx1, fy1))) = line.fit {
                chart
                    .draw_series(LineSeries::new(
                        [(fx0, fy0 / div), (fx1, fy1 / div)],
                        BLACK.mix(0.6).stroke_width(1),
                    ))
                    .ok()?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .ok()?;
        root.present().ok()?;
    }
    // Inline SVG in HTML5 needs no namespace; dropping it leaves the page
    // without a single URL.
    Some(svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page prints this SVG as it is, so plotters' own escaping of
    /// titles and legend labels (variant names come from meta.json) is
    /// what keeps outside text out of the markup.
    #[test]
    fn titles_and_labels_are_escaped_in_the_svg() {
        let points = [(0.0, 1.0), (1.0, 2.0)];
        let line = Line {
            label: "<script>&co".into(),
            color: LEAKY,
            points: &points,
            fit: None,
        };
        let svg = chart("heap <&> over time", Unit::Bytes, Axis::Seconds, &[line]).unwrap();
        assert!(svg.contains("heap &lt;&amp;&gt; over time"), "{svg}");
        assert!(svg.contains("&lt;script&gt;&amp;co"), "{svg}");
        assert!(!svg.contains("<script") && !svg.contains("<&>"), "{svg}");
    }
}
