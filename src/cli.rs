//! The command line: one subcommand per job, one line of help each.

use clap::{Args, Parser, Subcommand};

/// `0.1.0 (abc1234)`: the Cargo version and, when built from a git
/// checkout, the commit (see build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), env!("MEMSLEUTH_VERSION_SUFFIX"));

#[derive(Debug, Parser)]
#[command(
    name = "memsleuth",
    version = VERSION,
    about = "Find out why a running Python process keeps growing, without restarting it and without gdb.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch a process and say why its memory grows: verdict, evidence, next command.
    Doctor(DoctorArgs),
    /// Run doctor on a bundled leaky Python service (starts it, diagnoses it, cleans up).
    Demo(DemoArgs),
    /// List running Python processes with their version, build and memory.
    Ps(PsArgs),
    /// Watch a process's memory counters live, with deltas and rates since start.
    Top(TopArgs),
    /// Show a process's mappings grouped by what backs them, flagging repeated mappings (pmap's successor).
    Maps(MapsArgs),
    /// List SysV shared-memory segments and which processes have them attached, how many times.
    Shm(ShmArgs),
    /// Show the interpreter, how memsleuth would attach, and what each thread is doing (no attach).
    Info(InfoArgs),
    /// Run Python code inside the process and print its output.
    Exec(ExecArgs),
    /// Print the repr() of a Python expression evaluated inside the process.
    Eval(EvalArgs),
    /// Open an interactive Python shell inside the process (pyrasite-shell's successor).
    Shell(ShellArgs),
    /// Count live Python objects by type, with sizes (a census of the heap).
    Types(TypesArgs),
    /// Take repeated censuses and show which types keep growing.
    Growth(GrowthArgs),
    /// Show the garbage collector's state and gc.garbage, and why objects are stuck there.
    Gc(GcArgs),
    /// Show why objects are alive: their retainer chains back to a root.
    Why(WhyArgs),
    /// Show the objects that keep the most memory alive (retained sizes, biggest first).
    Retained(RetainedArgs),
    /// Start, snapshot, diff or stop tracemalloc inside the process.
    Tracemalloc(TracemallocArgs),
    /// Show the allocators' view (glibc malloc, pymalloc arenas); --probe finds what is reclaimable.
    Native(NativeArgs),
    /// Browse the live heap interactively: types, growth, instances and why they are alive.
    View(ViewArgs),
    /// Serve Prometheus metrics for every Python process here: memory, leaks, growing types.
    Exporter(ExporterArgs),
    /// Start a program that memsleuth can reach without ptrace: `run -- python app.py`.
    Run(RunArgs),
    /// Print a shell completion script: `source <(memsleuth completions bash)`.
    Completions(CompletionsArgs),
    /// Print the man page (roff): `memsleuth man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Keep the program running when the process that started `memsleuth run` exits (by default it gets SIGTERM then).
    #[arg(long)]
    pub survive_parent: bool,
    /// The program and its arguments, e.g. `python app.py --port 8000` (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 no leak, 3 leak, 4 inconclusive, 1 error, 2 usage.")]
pub struct DoctorArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// How long to watch (`20s`, `90s`, `2m`; at least 1 s).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: f64,
    /// Print one JSON document (schema: docs/doctor.schema.json) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (charts, findings, retainer graph) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    /// Allow one gc.collect() at the end to see what it frees (changes the target's heap).
    #[arg(long)]
    pub allow_collect: bool,
    /// Take the censuses and collector reads with the injected agent instead of reading memory.
    #[arg(long)]
    pub inject: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which leak to demonstrate.
    #[arg(long, value_enum, default_value_t = crate::demo::Scenario::SysvShm)]
    pub scenario: crate::demo::Scenario,
    /// The Python to run it with (default: python3 from PATH).
    #[arg(long, value_name = "PATH")]
    pub python: Option<std::path::PathBuf>,
    /// How long doctor watches.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: f64,
    /// Print doctor's JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write doctor's HTML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Size,
    Count,
}

#[derive(Debug, Args)]
pub struct TypesArgs {
    #[command(flatten)]
    pub target: HeapTarget,
    /// Count only objects the garbage collector tracks (faster, no str/int/float...).
    #[arg(long)]
    pub gc_only: bool,
    /// Show this many types (0: all); applies to --json too.
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Order by total size or by count.
    #[arg(long, value_enum, default_value_t = SortBy::Size)]
    pub sort: SortBy,
    /// Run gc.collect() first, so unreachable cycles are not counted (changes the target's heap; uses the agent).
    #[arg(long, conflicts_with_all = ["read_only", "nonblocking", "core"])]
    pub collect: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GrowthArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    #[command(flatten)]
    pub read: HeapReadArgs,
    /// Seconds between censuses.
    #[arg(long, default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,
    /// Number of censuses (at least 2).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub samples: u32,
    /// Run gc.collect() before each census (hides garbage cycles; off by default; uses the agent).
    #[arg(long, conflicts_with_all = ["read_only", "nonblocking"])]
    pub collect: bool,
    /// Show this many types (0: all); applies to --json too.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Count only gc-tracked objects.
    #[arg(long)]
    pub gc_only: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub target: HeapTarget,
    /// Run gc.collect() and report what it freed (uses the agent).
    #[arg(long, conflicts_with_all = ["read_only", "nonblocking", "core"])]
    pub collect: bool,
    /// Seconds between the two reads of the counters (what moves shows whether anything collects).
    #[arg(long, default_value_t = 0.2, value_parser = parse_interval)]
    pub interval: f64,
    /// Show this many classes found in gc.garbage.
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// Readable retainer paths, aggregated over the samples.
    Text,
    /// The back-reference graph of the sampled paths, in graphviz DOT.
    Dot,
    /// That graph drawn as SVG (graphviz `dot` when on PATH, else a built-in layout).
    Svg,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["type_name", "id"]))]
#[command(
    after_help = "SVG uses graphviz's `dot` when it is on PATH, else a built-in layout; \
set MEMSLEUTH_NO_GRAPHVIZ=1 to always use the built-in one."
)]
pub struct WhyArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Objects of this type (`UserSession` or `app.UserSession`).
    #[arg(long = "type", value_name = "NAME")]
    pub type_name: Option<String>,
    /// One object, by its id() / address (decimal or 0x hex).
    #[arg(long, value_name = "ADDRESS")]
    pub id: Option<String>,
    /// How many instances to sample.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub samples: u32,
    /// Longest retainer chain to follow.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub depth: u32,
    /// Output: readable paths, a DOT graph, or an SVG picture.
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Print one JSON document instead of text (with --format dot/svg, the graph is in it).
    #[arg(long)]
    pub json: bool,
    /// Skip the retained size of each holder (it walks the whole heap graph once more).
    #[arg(long)]
    pub no_retained: bool,
}

#[derive(Debug, Args)]
pub struct RetainedArgs {
    #[command(flatten)]
    pub target: HeapTarget,
    /// How many objects to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TracemallocArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    #[command(subcommand)]
    pub action: TracemallocAction,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TracemallocAction {
    /// Start tracing allocations (costs CPU and memory in the target until stopped).
    Start {
        /// Frames to keep per allocation traceback.
        #[arg(long, default_value_t = 1)]
        frames: u32,
    },
    /// Take a snapshot and keep it (the last two are kept for diff).
    Snapshot {
        /// Do not run gc.collect() first (by default unreachable cycles are collected, as the
        /// collector would, unless automatic collection is off in the target).
        #[arg(long)]
        no_collect: bool,
    },
    /// Show the allocation sites that grew most between the last two snapshots.
    Diff {
        /// Group by source line or by whole traceback.
        #[arg(long, value_enum, default_value_t = TraceGroup::Line)]
        by: TraceGroup,
        /// Show this many sites.
        #[arg(long, default_value_t = 15)]
        limit: usize,
    },
    /// Stop tracing and free tracemalloc's memory.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceGroup {
    Line,
    Traceback,
}

#[derive(Debug, Args)]
pub struct NativeArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Measure what RSS each step returns: as-is, after gc.collect(), after malloc_trim(0).
    #[arg(long)]
    pub probe: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Keys: Enter opens (a type's instances, an object's retainer chain), Backspace goes back, \
/ filters, s sorts by size, count or growth, b sets the baseline, r refreshes, g shows the collector, \
m the mappings, ? the help, q or Esc quits and detaches."
)]
pub struct ViewArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Count only objects the garbage collector tracks (faster censuses, no str/int/float...).
    #[arg(long)]
    pub gc_only: bool,
}

/// How to attach; shared by every command that runs code in the target.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The Python process.
    pub pid: u32,
    /// Seconds to wait for the interpreter to reach a safe point.
    #[arg(long, default_value_t = 5.0, value_parser = parse_interval)]
    pub timeout: f64,
    /// How to get in: PEP 768 when possible (auto), or force one way.
    #[arg(long, value_enum, default_value_t = crate::inject::attach::MethodChoice::Auto)]
    pub method: crate::inject::attach::MethodChoice,
    /// Before exiting, wait until the agent's thread has ended. At detach
    /// everything is restored at once, but that thread stays asleep up to
    /// half a second longer, holding only the stdout/stderr stand-ins it
    /// replaced (a print() in flight in another thread may still use them).
    #[arg(long)]
    pub wait_detach: bool,
}

impl AttachArgs {
    pub fn options(&self) -> crate::inject::attach::AttachOptions {
        crate::inject::attach::AttachOptions {
            timeout: std::time::Duration::from_secs_f64(self.timeout),
            method: self.method,
            wait_detach: self.wait_detach,
            pipeline: Vec::new(),
        }
    }
}

/// How the heap commands read the heap: from outside (the default where
/// the build is supported) or with the injected agent.
#[derive(Debug, Args)]
pub struct HeapReadArgs {
    /// Only read the heap from outside, never run code in the target (the default where supported; no fallback to the agent).
    #[arg(long, conflicts_with = "inject")]
    pub read_only: bool,
    /// Take the census with the agent injected into the target instead of reading its memory from outside.
    #[arg(long)]
    pub inject: bool,
    /// Read from outside without pausing the target's threads (objects changing meanwhile are skipped, with a warning).
    #[arg(long, conflicts_with = "inject")]
    pub nonblocking: bool,
}

/// A live Python process or a core file, and how to reach its heap: what
/// `types`, `gc` and `retained` take.
#[derive(Debug, Args)]
pub struct HeapTarget {
    /// The Python process (omit with --core).
    #[arg(required_unless_present = "core", conflicts_with = "core")]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub attach: AttachTuning,
    #[command(flatten)]
    pub read: HeapReadArgs,
    #[command(flatten)]
    pub core: CoreArgs,
}

/// A core dump instead of a live process (read-only).
#[derive(Debug, Args)]
pub struct CoreArgs {
    /// Read an ELF core file (e.g. from gcore) instead of a live process.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["inject", "nonblocking"])]
    pub core: Option<std::path::PathBuf>,
    /// With --core: the executable the core was made from, when not at the path the core names.
    #[arg(long, value_name = "PATH", requires = "core", conflicts_with = "pid")]
    pub exe: Option<std::path::PathBuf>,
}

/// [`AttachArgs`] without the pid, for commands that can also read a core.
#[derive(Debug, Args)]
pub struct AttachTuning {
    /// Seconds to wait for the interpreter to reach a safe point (with the agent).
    #[arg(long, default_value_t = 5.0, value_parser = parse_interval)]
    pub timeout: f64,
    /// How the agent gets in: PEP 768 when possible (auto), or force one way.
    #[arg(long, value_enum, default_value_t = crate::inject::attach::MethodChoice::Auto)]
    pub method: crate::inject::attach::MethodChoice,
    /// Before exiting, wait until the agent's thread has ended (with the agent).
    #[arg(long)]
    pub wait_detach: bool,
}

impl AttachTuning {
    pub fn with_pid(&self, pid: u32) -> AttachArgs {
        AttachArgs {
            pid,
            timeout: self.timeout,
            method: self.method,
            wait_detach: self.wait_detach,
        }
    }
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The process to describe.
    pub pid: u32,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["code", "file"]))]
pub struct ExecArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// The code to run (statements, as in a .py file).
    pub code: Option<String>,
    /// Run the code in FILE instead (`-` reads standard input).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Print one JSON document instead of the output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// The expression.
    pub expr: String,
    /// Print one JSON document (the repr as a string) instead of the repr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// History file (default: ~/.memsleuth_history).
    #[arg(long, value_name = "FILE")]
    pub history: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The process to watch.
    pub pid: u32,
    /// Seconds between samples.
    #[arg(short, long, default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,
    /// Stop after this many samples (default: until interrupted).
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Stream one JSON object per sample (NDJSON).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MapsArgs {
    /// The process to inspect.
    pub pid: u32,
    /// One line per mapping, like `pmap -x`.
    #[arg(long, conflicts_with = "diff")]
    pub raw: bool,
    /// Sample twice, SECONDS apart, and show groups that appeared, vanished or grew.
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    pub diff: Option<f64>,
    /// Show every group (default: the 30 largest by RSS plus every repeated mapping).
    #[arg(long)]
    pub all: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShmArgs {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// "20s", "2m", "500ms", "20" (seconds) → seconds, 1 s to 24 h.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 20s, 2m, 500ms)"))?;
    let secs = v * mul;
    if !(1.0..=86400.0).contains(&secs) {
        return Err("must be between 1 second and 24 hours".into());
    }
    Ok(secs)
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.01..=86400.0).contains(&v) {
        return Err("must be between 0.01 and 86400 seconds".into());
    }
    Ok(v)
}

#[derive(Debug, Args)]
#[command(
    after_help = "Metrics on http://LISTEN/metrics (text 0.0.4, or OpenMetrics when asked for), health on /healthz. \
Nothing is injected: /proc is read every interval, and with --heap the heap is read from outside."
)]
pub struct ExporterArgs {
    /// Address and port to serve metrics on.
    #[arg(long, default_value = "127.0.0.1:9567", value_name = "ADDR:PORT")]
    pub listen: String,
    /// How often to sample every process (`15s`, `1m`; at least 1 s).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub interval: f64,
    /// Watch only processes whose command line matches this regular expression.
    #[arg(long = "match", value_name = "REGEX")]
    pub match_: Option<String>,
    /// Export the N types growing most per process, read from outside (0: off).
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = parse_heap_top)]
    pub heap: usize,
}

/// `--heap N`: bounded, since every type is a series per process.
fn parse_heap_top(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err("must be a number of types from 0 (off) to 100".into()),
    }
}
