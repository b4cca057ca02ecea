//! The report's charts, drawn with plotters' SVG backend into strings that
//! go inline into the HTML page: a figure against the swept key (a line per
//! policy, a marker per mean with its 95% interval as error bar) and a
//! run's time series (free pages with the watermarks; reclaim counters).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::data::{Res, fmt_num};

/// One line of a figure chart.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x position, mean, 95% CI half-width) per point.
    pub points: Vec<(f64, f64, Option<f64>)>,
}

/// The x axis: the swept values and where they go.
pub struct XAxis {
    /// The swept key.
    pub name: String,
    /// (position, label) per swept value.
    pub ticks: Vec<(f64, String)>,
}

impl XAxis {
    /// Positions for `values`: proportional when every value is a number
    /// with an optional K/M/G suffix (memory sizes), else evenly spaced.
    pub fn new(name: &str, values: &[String]) -> XAxis {
        let parsed: Option<Vec<f64>> = values.iter().map(|v| parse_size(v)).collect();
        let positions = match parsed {
            Some(p) if p.windows(2).all(|w| w[0] != w[1]) => p,
            _ => (0..values.len()).map(|i| i as f64).collect(),
        };
        XAxis {
            name: name.to_string(),
            ticks: positions.into_iter().zip(values.iter().cloned()).collect(),
        }
    }

    /// The position of `value`.
    pub fn position(&self, value: &str) -> Option<f64> {
        self.ticks.iter().find(|(_, l)| l == value).map(|(p, _)| *p)
    }
}

/// `12M` as 12 * 2^20; plain numbers as themselves.
fn parse_size(s: &str) -> Option<f64> {
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1024.0),
        'm' | 'M' => (&s[..s.len() - 1], 1024.0 * 1024.0),
        'g' | 'G' => (&s[..s.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    num.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .map(|x| x * mult)
}

/// Chart size in pixels.
const SIZE: (u32, u32) = (760, 340);
/// Room on the right for the legend, so that it never hides a point.
const LEGEND_W: u32 = 150;

/// Draws a legend (a short line and the label per entry) at `(x, y)` of
/// `area`, in pixels: in the margin right of the plot.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    (x, y): (i32, i32),
    items: &[(String, ShapeStyle)],
) -> Res<()>
where
    DB::ErrorType: 'static,
{
    let font =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, style)) in items.iter().enumerate() {
        let ly = y + 16 * i as i32;
        area.draw(&PathElement::new(vec![(x, ly), (x + 20, ly)], *style))
            .map_err(|e| e.to_string())?;
        area.draw(&Text::new(label.clone(), (x + 26, ly), font.clone()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The colour of series `i`.
fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

/// A figure's chart: one line per series, one error bar (whose dot is the
/// mean: exactly one `<circle>` per point) per point.
pub fn figure_chart(title: &str, x: &XAxis, series: &[Series]) -> Res<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (xmin, xmax) = x.ticks.iter().fold((f64::MAX, f64::MIN), |(a, b), (p, _)| {
            (a.min(*p), b.max(*p))
        });
        let span = if xmax > xmin { xmax - xmin } else { 1.0 };
        let mut ymax: f64 = 0.0;
        let mut ymin: f64 = 0.0;
        for s in series {
            for &(_, m, ci) in &s.points {
                ymax = ymax.max(m + ci.unwrap_or(0.0));
                ymin = ymin.min(m - ci.unwrap_or(0.0));
            }
        }
        if ymax <= ymin {
            ymax = ymin + 1.0;
        }
        let pad = (ymax - ymin) * 0.08;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .margin_right(LEGEND_W)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (xmin - span * 0.1)..(xmax + span * 0.1),
                (ymin - if ymin < 0.0 { pad } else { 0.0 })..(ymax + pad),
            )?;
        chart
            .configure_mesh()
            .x_desc(x.name.as_str())
            .y_desc(title)
            // The swept values label the x axis themselves (below).
            .x_labels(0)
            .disable_x_mesh()
            .y_label_formatter(&|v| fmt_num(*v))
            .light_line_style(WHITE)
            .draw()?;
        // A tick label under each swept value, where plotters would put
        // its own (it places ticks at round numbers, not at our values).
        let y_bottom = chart.y_range().start;
        let style =
            TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (p, label) in &x.ticks {
            let (px, py) = chart.backend_coord(&(*p, y_bottom));
            root.draw(&Text::new(label.clone(), (px, py + 6), style.clone()))?;
            root.draw(&PathElement::new(vec![(px, py), (px, py + 4)], BLACK))?;
        }
        let k = series.len() as f64;
        let items: Vec<(String, ShapeStyle)> = series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.label.clone(), color(i).stroke_width(2)))
            .collect();
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            // Series side by side around each x so that the bars do not hide each other.
            let dx = (i as f64 - (k - 1.0) / 2.0) * span * 0.015;
            let pts: Vec<(f64, f64, Option<f64>)> =
                s.points.iter().map(|&(x, m, ci)| (x + dx, m, ci)).collect();
            chart.draw_series(LineSeries::new(
                pts.iter().map(|&(x, m, _)| (x, m)),
                c.stroke_width(2),
            ))?;
            chart.draw_series(pts.iter().map(|&(x, m, ci)| {
                let h = ci.unwrap_or(0.0);
                ErrorBar::new_vertical(x, m - h, m, m + h, c.filled(), 8)
            }))?;
        }
        legend(&root, ((SIZE.0 - LEGEND_W + 10) as i32, 50), &items)?;
        root.present()?;
    }
    Ok(svg)
}

/// A run's time series: free pages with the min/low/high watermarks on
/// top, the cumulative reclaim counters below. `free` is drawn first, in
/// the first series colour (#1F77B4, width 2): the first such `<polyline>`
/// of the SVG has one point per sample.
pub fn time_series_chart(
    title: &str,
    free: &[(f64, f64)],
    watermarks: &[(String, f64)],
    reclaim: &[(String, Vec<(f64, f64)>)],
) -> Res<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 16))?;
        let (top, bottom) = root.split_vertically(250);
        let tmax = free
            .iter()
            .chain(reclaim.iter().flat_map(|(_, p)| p.iter()))
            .map(|p| p.0)
            .fold(1.0f64, f64::max);
        let fmax = free
            .iter()
            .map(|p| p.1)
            .chain(watermarks.iter().map(|w| w.1))
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&top)
            .margin(10)
            .margin_right(LEGEND_W)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, 0.0..fmax)?;
        chart
            .configure_mesh()
            .x_desc("ms")
            .y_desc("free pages")
            .y_label_formatter(&|v| fmt_num(*v))
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(LineSeries::new(
            free.iter().copied(),
            color(0).stroke_width(2),
        ))?;
        let mut items = vec![("free pages".to_string(), color(0).stroke_width(2))];
        for (i, (name, level)) in watermarks.iter().enumerate() {
            let c = color(5 + i);
            items.push((format!("watermark {name}"), c.stroke_width(1)));
            chart.draw_series(LineSeries::new(
                [(0.0, *level), (tmax, *level)],
                c.stroke_width(1),
            ))?;
        }
        legend(&top, ((SIZE.0 - LEGEND_W + 10) as i32, 20), &items)?;

        let rmax = reclaim
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.1))
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&bottom)
            .margin(10)
            .margin_right(LEGEND_W)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..tmax, 0.0..rmax)?;
        chart
            .configure_mesh()
            .x_desc("ms")
            .y_desc("reclaimed (cumulative)")
            .y_label_formatter(&|v| fmt_num(*v))
            .light_line_style(WHITE)
            .draw()?;
        let mut items = Vec::new();
        for (i, (name, pts)) in reclaim.iter().enumerate() {
            let c = color(1 + i);
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?;
            items.push((name.clone(), c.stroke_width(2)));
        }
        legend(&bottom, ((SIZE.0 - LEGEND_W + 10) as i32, 20), &items)?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_placed_proportionally() {
        let x = XAxis::new("mem", &["12M".into(), "16M".into(), "24M".into()]);
        assert_eq!(x.position("16M"), Some(16.0 * 1024.0 * 1024.0));
        let x = XAxis::new("policy", &["nofs".into(), "today".into()]);
        assert_eq!(x.position("today"), Some(1.0));
    }

    #[test]
    fn one_circle_per_point() {
        let x = XAxis::new("mem", &["12M".into(), "24M".into()]);
        let series = [
            Series {
                label: "nofs".into(),
                points: vec![(x.ticks[0].0, 3.0, Some(1.0)), (x.ticks[1].0, 2.0, None)],
            },
            Series {
                label: "today".into(),
                points: vec![
                    (x.ticks[0].0, 1.0, Some(0.5)),
                    (x.ticks[1].0, 0.0, Some(0.0)),
                ],
            },
        ];
        let svg = figure_chart("stalls", &x, &series).unwrap();
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 4);
    }
}
