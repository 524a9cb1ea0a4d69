//! `veil boot-report`: the boot timeline of a serial log as a table of phase durations, and
//! optionally as an SVG timeline chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use veil_agent::timeline::{Mark, Phase, parse_log, phases};

/// Arguments of `veil boot-report`.
#[derive(Args)]
pub struct ReportArgs {
    /// Serial log of a veilboot run (lines `veil: t=<us> stage=<name>`).
    log: PathBuf,
    /// Also draw the phases as an SVG timeline chart into this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Replace --svg if it exists.
    #[arg(long, requires = "svg")]
    force: bool,
    /// Print the phases as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The phases, with the time from reset to the first mark as its own phase.
fn timeline(marks: &[Mark]) -> Vec<Phase> {
    let mut all = Vec::new();
    if let Some(first) = marks.first()
        && first.t_us > 0
    {
        all.push(Phase { stage: "reset".into(), start_us: 0, duration_us: first.t_us });
    }
    all.extend(phases(marks));
    all
}

pub fn run(args: ReportArgs) -> Result<()> {
    if let Some(path) = &args.svg {
        crate::outfile::check_free(path, args.force, "--force")?;
    }
    let bytes = std::fs::read(&args.log).with_context(|| format!("cannot read {}", args.log.display()))?;
    let marks = parse_log(&String::from_utf8_lossy(&bytes));
    if marks.is_empty() {
        bail!("{} has no boot timeline marks (lines \"veil: t=<us> stage=<name>\")", args.log.display());
    }
    let phases = timeline(&marks);
    let total = marks.last().map_or(0, |m| m.t_us);
    if args.json {
        let list: Vec<_> = phases
            .iter()
            .map(|p| serde_json::json!({"stage": p.stage, "start_us": p.start_us, "duration_us": p.duration_us}))
            .collect();
        println!("{}", serde_json::json!({"phases": list, "total_us": total}));
    } else {
        println!("{:<24} {:>12} {:>14} {:>7}", "phase", "start (ms)", "duration (ms)", "share");
        for p in &phases {
            let share = if total > 0 { 100.0 * p.duration_us as f64 / total as f64 } else { 0.0 };
            println!(
                "{:<24} {:>12.3} {:>14.3} {:>6.1}%",
                p.stage,
                p.start_us as f64 / 1e3,
                p.duration_us as f64 / 1e3,
                share
            );
        }
        println!("{:<24} {:>12} {:>14.3}", "total (to last mark)", "", total as f64 / 1e3);
    }
    if let Some(path) = &args.svg {
        write_svg(path, args.force, &phases, total)?;
    }
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A horizontal bar per phase on a common time axis.
fn write_svg(path: &Path, force: bool, phases: &[Phase], total_us: u64) -> Result<()> {
    const W: f64 = 900.0;
    const LEFT: f64 = 160.0;
    const ROW: f64 = 26.0;
    let span = total_us.max(1) as f64;
    let plot = W - LEFT - 20.0;
    let h = 60.0 + ROW * phases.len() as f64;
    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14">veilboot boot timeline ({:.3} ms to the last mark)</text>"#,
        total_us as f64 / 1e3
    )?;
    let palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"];
    for (i, p) in phases.iter().enumerate() {
        let y = 40.0 + ROW * i as f64;
        let x = LEFT + plot * p.start_us as f64 / span;
        let w = (plot * p.duration_us as f64 / span).max(1.0);
        writeln!(svg, r#"<text x="10" y="{:.1}">{}</text>"#, y + 15.0, escape(&p.stage))?;
        writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{}: {:.3} ms</title></rect>"#,
            ROW - 6.0,
            palette[i % palette.len()],
            escape(&p.stage),
            p.duration_us as f64 / 1e3
        )?;
        writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{:.3} ms</text>"#,
            (x + w + 4.0).min(W - 70.0),
            y + 15.0,
            p.duration_us as f64 / 1e3
        )?;
    }
    let axis_y = 40.0 + ROW * phases.len() as f64 + 4.0;
    writeln!(svg, r#"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="black"/>"#, LEFT + plot)?;
    for k in 0..=4 {
        let x = LEFT + plot * k as f64 / 4.0;
        writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{:.1} ms</text>"#,
            axis_y + 14.0,
            span * k as f64 / 4.0 / 1e3
        )?;
    }
    svg.push_str("</svg>\n");
    crate::outfile::write(path, force, crate::outfile::Access::Public, svg.as_bytes())
}
