//! The interactive screen: a header, a sparkline over time, the program table and the
//! per-capability event rates; fits an 80x24 terminal.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{
    Block, Borders, Cell, Paragraph, Row as TableRow, Sparkline, Table, TableState,
};
use ratatui::Frame;

use super::{capability_lines, cells, numeric, take, TopArgs, COLUMNS};
use crate::Failure;
use osprey::top::{Interval, Sort};

/// Samples kept for the graph: more than the widest terminal shows.
const HISTORY: usize = 512;

struct View {
    all: bool,
    interval: Duration,
    sort: Sort,
    latest: Option<Interval>,
    /// Total CPU % of the shown programs, in hundredths of a percent.
    total_cpu: VecDeque<u64>,
    runs: HashMap<u32, VecDeque<u64>>,
    /// The program whose runs/s the graph shows; None: total CPU %.
    selected: Option<u32>,
    table: TableState,
}

fn push(history: &mut VecDeque<u64>, value: u64) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(value);
}

impl View {
    fn update(&mut self, mut interval: Interval) {
        self.sort.apply(&mut interval.rows);
        push(
            &mut self.total_cpu,
            (interval.total_cpu_percent() * 100.0).round() as u64,
        );
        self.runs
            .retain(|id, _| interval.rows.iter().any(|r| r.id == *id));
        for row in &interval.rows {
            push(
                self.runs.entry(row.id).or_default(),
                row.runs_per_sec.round() as u64,
            );
        }
        if let Some(id) = self.selected {
            if !interval.rows.iter().any(|r| r.id == id) {
                self.selected = None;
            }
        }
        self.latest = Some(interval);
        self.sync_table();
    }

    fn rows_len(&self) -> usize {
        self.latest.as_ref().map_or(0, |l| l.rows.len())
    }

    fn sync_table(&mut self) {
        let index = self.selected.and_then(|id| {
            self.latest
                .as_ref()
                .and_then(|l| l.rows.iter().position(|r| r.id == id))
        });
        self.table.select(index);
    }

    /// Moves the selection by `step` rows (the first move selects the top row).
    fn select(&mut self, step: isize) {
        let Some(latest) = &self.latest else { return };
        if latest.rows.is_empty() {
            return;
        }
        let last = latest.rows.len() - 1;
        let index = match self.table.selected() {
            None => 0,
            Some(i) => i.saturating_add_signed(step).min(last),
        };
        self.selected = Some(latest.rows[index].id);
        self.sync_table();
    }

    fn resort(&mut self, sort: Sort) {
        self.sort = sort;
        if let Some(latest) = &mut self.latest {
            sort.apply(&mut latest.rows);
        }
        self.sync_table();
    }

    fn draw(&mut self, frame: &mut Frame) {
        let capability_lines = match self.latest.as_ref().and_then(|l| l.capabilities.as_ref()) {
            Some(caps) => caps.len().clamp(1, 4) as u16 + 1,
            None => 1,
        };
        let [header, graph, table, capabilities, help] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(5),
            Constraint::Min(3),
            Constraint::Length(capability_lines),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        frame.render_widget(Paragraph::new(self.header()), header);
        self.draw_graph(frame, graph);
        self.draw_table(frame, table);
        frame.render_widget(Paragraph::new(self.capability_text()), capabilities);
        frame.render_widget(
            Paragraph::new(
                "q quit  sort: c cpu  r runs/s  a avg ns  n name  up/down select  esc total",
            )
            .style(Style::new().add_modifier(Modifier::DIM)),
            help,
        );
    }

    fn header(&self) -> Line<'static> {
        let scope = if self.all {
            "all BPF programs"
        } else {
            "Osprey programs"
        };
        let total = self.latest.as_ref().map_or(0.0, |l| l.total_cpu_percent());
        Line::from(format!(
            "osprey top  {scope}: {}  CPU {total:.2}%  every {:.1}s  sort: {}",
            self.rows_len(),
            self.interval.as_secs_f64(),
            self.sort.label()
        ))
        .style(Style::new().add_modifier(Modifier::BOLD))
    }

    fn draw_graph(&self, frame: &mut Frame, area: Rect) {
        let selected = self.selected.and_then(|id| {
            let row = self.latest.as_ref()?.rows.iter().find(|r| r.id == id)?;
            Some((row, self.runs.get(&id)?))
        });
        let (title, history) = match selected {
            Some((row, history)) => (
                format!(
                    " runs/s of {} (id {}): {:.0} ",
                    row.name, row.id, row.runs_per_sec
                ),
                history,
            ),
            None => (" total CPU % ".to_string(), &self.total_cpu),
        };
        // The newest samples, as many as fit inside the borders.
        let width = area.width.saturating_sub(2) as usize;
        let data: Vec<u64> = history
            .iter()
            .skip(history.len().saturating_sub(width))
            .copied()
            .collect();
        frame.render_widget(
            Sparkline::default()
                .block(Block::default().borders(Borders::ALL).title(title))
                .data(&data),
            area,
        );
    }

    fn draw_table(&mut self, frame: &mut Frame, area: Rect) {
        let align = |i: usize, text: String| {
            let line = Line::from(text);
            if numeric(i) {
                line.right_aligned()
            } else {
                line
            }
        };
        let header = TableRow::new(
            COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (title, _))| Cell::from(align(i, title.to_string()))),
        )
        .style(Style::new().add_modifier(Modifier::REVERSED));
        let rows: Vec<TableRow> = match &self.latest {
            None => vec![TableRow::new([Cell::from(""), Cell::from("sampling...")])],
            Some(latest) => latest
                .rows
                .iter()
                .map(|row| {
                    TableRow::new(
                        cells(row)
                            .into_iter()
                            .enumerate()
                            .map(|(i, text)| Cell::from(align(i, text))),
                    )
                })
                .collect(),
        };
        let table = Table::new(rows, COLUMNS.map(|(_, width)| Constraint::Length(width)))
            .header(header)
            .row_highlight_style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
        frame.render_stateful_widget(table, area, &mut self.table);
    }

    fn capability_text(&self) -> Vec<Line<'static>> {
        let Some(caps) = self.latest.as_ref().and_then(|l| l.capabilities.as_ref()) else {
            return vec![Line::from(
                "no agent: events/s and drops need `osprey agent`",
            )];
        };
        // Five lines at most (the program table needs the rows); the last says what is left out.
        capability_lines(caps, 5)
            .into_iter()
            .map(Line::from)
            .collect()
    }
}

/// Puts the terminal back however `run` ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn run(args: &TopArgs, interval: Duration) -> Result<(), Failure> {
    let mut previous = take(args)?;
    let mut terminal = ratatui::try_init().map_err(|e| {
        // A half-done setup (raw mode on, no alternate screen) must not outlive us.
        ratatui::restore();
        Failure::Usage(format!("osprey top needs a terminal ({e}); use --once"))
    })?;
    let _restore = Restore;
    let mut view = View {
        all: args.all,
        interval,
        sort: Sort::Cpu,
        latest: None,
        total_cpu: VecDeque::new(),
        runs: HashMap::new(),
        selected: None,
        table: TableState::default(),
    };
    let mut next = previous.at + interval;
    loop {
        terminal.draw(|frame| view.draw(frame))?;
        let now = Instant::now();
        if now < next && event::poll(next - now)? {
            if let Event::Key(key) = event::read()? {
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                match key.code {
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => break,
                    KeyCode::Char('q') => break,
                    KeyCode::Char('c') => view.resort(Sort::Cpu),
                    KeyCode::Char('r') => view.resort(Sort::Runs),
                    KeyCode::Char('a') => view.resort(Sort::Avg),
                    KeyCode::Char('n') => view.resort(Sort::Name),
                    KeyCode::Down | KeyCode::Char('j') => view.select(1),
                    KeyCode::Up | KeyCode::Char('k') => view.select(-1),
                    KeyCode::Esc => {
                        view.selected = None;
                        view.sync_table();
                    }
                    _ => {}
                }
            }
            continue;
        }
        let current = take(args)?;
        view.update(Interval::between(&previous, &current, args.all));
        // Keep a steady cadence even when sampling or drawing took a while.
        next = (next + interval).max(current.at);
        previous = current;
    }
    Ok(())
}
