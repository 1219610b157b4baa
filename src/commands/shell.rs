//! `memsleuth shell`: an interactive Python prompt inside the target.
//!
//! Input is read here (rustyline: editing, history, completion) and each
//! complete statement is sent to the agent, which runs it in a namespace that
//! persists for the session. Whether a statement is complete is decided by
//! the target's own `codeop`, so `if x:` continues the block exactly as the
//! target's Python would. Ctrl-C cancels the line being typed and never
//! reaches the target; Ctrl-D detaches.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Context, Editor, Helper, Highlighter, Hinter, Validator};

use super::CmdResult;
use crate::agent::protocol::{CompileStatus, ExecMode};
use crate::cli::ShellArgs;
use crate::inject::attach::{self, Attached};

/// Completion by asking the target for names in the session namespace.
#[derive(Helper, Highlighter, Hinter, Validator)]
struct Remote {
    attached: Rc<RefCell<Option<Attached>>>,
}

impl Completer for Remote {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| {
                i + before[i..].chars().next().map_or(1, char::len_utf8)
            });
        let word = &before[start..];
        let mut guard = self.attached.borrow_mut();
        let Some(attached) = guard.as_mut() else {
            return Ok((start, Vec::new()));
        };
        let matches = attached
            .session
            .complete(word)
            .map(|c| c.matches)
            .unwrap_or_default();
        Ok((start, matches))
    }
}

pub fn run(args: &ShellArgs) -> CmdResult {
    let attached = attach::attach(args.attach.pid, &args.attach.options())?;
    let hello = attached.session.hello.clone();
    println!(
        "memsleuth shell: Python {} in process {} ({}), attached in {:.0} ms",
        hello
            .python_version
            .split_whitespace()
            .next()
            .unwrap_or("?"),
        args.attach.pid,
        attached.method,
        attached.attach_s * 1000.0
    );
    for note in &attached.notes {
        println!("note: {note}");
    }
    println!(
        "The namespace persists until you detach; gc, sys and os are imported. Ctrl-D detaches."
    );

    // SIGINT is handled by the editor at the prompt; while the target runs a
    // statement it must not kill us (the session would be torn down mid-request).
    // SAFETY: installing SIG_IGN has no preconditions.
    let old_sigint = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };

    let shared = Rc::new(RefCell::new(Some(attached)));
    let result = repl(args, &shared);
    let attached = shared
        .borrow_mut()
        .take()
        .expect("the session outlives the prompt");
    let detached = attached.detach();
    // SAFETY: restoring the previous disposition.
    unsafe { libc::signal(libc::SIGINT, old_sigint) };
    result?;
    detached?;
    println!("detached");
    Ok(ExitCode::SUCCESS)
}

fn repl(args: &ShellArgs, shared: &Rc<RefCell<Option<Attached>>>) -> anyhow::Result<()> {
    let mut editor: Editor<Remote, FileHistory> = Editor::new()?;
    editor.set_helper(Some(Remote {
        attached: shared.clone(),
    }));
    let history = args.history.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".memsleuth_history"))
    });
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { ">>> " } else { "... " };
        match editor.readline(prompt) {
            Ok(line) => {
                if !buffer.is_empty() {
                    buffer.push('\n');
                }
                buffer.push_str(&line);
                let mut guard = shared.borrow_mut();
                let session = &mut guard
                    .as_mut()
                    .expect("session present during the loop")
                    .session;
                let status = session.compile_check(&buffer)?.status;
                // An empty line ends a block, as in the REPL.
                if status == CompileStatus::Incomplete && !line.trim().is_empty() {
                    continue;
                }
                let source = std::mem::take(&mut buffer);
                if source.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(source.as_str());
                let result = session.exec(&source, ExecMode::Single)?;
                print!("{}", result.stdout);
                eprint!("{}", result.stderr);
                if let Some(repr) = &result.value_repr {
                    println!("{repr}");
                }
                if let Some(err) = &result.error {
                    eprint!("{}", super::traceback_text(err));
                }
            }
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                println!("KeyboardInterrupt");
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}
