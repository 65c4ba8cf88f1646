//! `ticker`: the long-running program the tests run as a server. Shell-free on purpose: it
//! prints its pid, its arguments as one JSON array (so a test sees exactly what it got, one
//! element per argument), the `MOTD` variable from its environment, its directory and
//! effective uid, echoes each line of its stdin as `stdin: <line>`, then `tick N` every
//! `--interval-ms` (default 100) until it is signalled. For the isolation tests it can also
//! `--probe` paths, `--allocate-mb` memory, `--fork-loop` until refused, leave an `--escape`
//! process outside its process group, `--litter` a shared directory, `--swap-loop` files
//! with links, and `--escape-swap` directories with links from outside its process group.
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--swap-dirs N:TARGET:DIR` (what `--escape-swap` runs): never returns.
    if let Some((pairs, rest)) = args
        .iter()
        .position(|a| a == "--swap-dirs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.split_once(':'))
    {
        let pairs: usize = pairs.parse().unwrap_or(1);
        let (target, dir) = rest.split_once(':').unwrap_or((rest, "."));
        let cwd = rustix::fs::CWD;
        loop {
            for i in 0..pairs {
                let real = format!("{dir}/d{i}");
                let link = format!("{dir}/x{i}");
                let _ = std::os::unix::fs::symlink(target, &link);
                let _ = rustix::fs::renameat_with(
                    cwd,
                    real.as_str(),
                    cwd,
                    link.as_str(),
                    rustix::fs::RenameFlags::EXCHANGE,
                );
            }
        }
    }
    if args.iter().any(|a| a == "--sleep-forever") {
        std::thread::sleep(Duration::from_secs(3600));
        return;
    }
    let interval = args
        .iter()
        .position(|a| a == "--interval-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(100);
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ticker pid={}", std::process::id());
    let _ = writeln!(out, "args={}", serde_json::json!(args));
    let motd = std::env::var("MOTD").unwrap_or_default();
    let _ = writeln!(out, "env MOTD={}", serde_json::json!(motd));
    let _ = writeln!(
        out,
        "cwd={}",
        std::env::current_dir().unwrap_or_default().display()
    );
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(str::to_owned)
        })
        .unwrap_or_default();
    let _ = writeln!(out, "uid={uid}");
    eprintln!("ticker: started");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // `--probe a,b,c`: try to read each path and say what happened.
    for path in flag("--probe")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let outcome = match std::fs::read(path) {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("denied ({})", e.kind()),
        };
        let _ = writeln!(out, "probe {path}: {outcome}");
    }
    // `--allocate-mb N`: take N MiB and touch every page.
    if let Some(mb) = flag("--allocate-mb").and_then(|v| v.parse::<usize>().ok()) {
        let mut hog: Vec<Vec<u8>> = Vec::new();
        for i in 0..mb {
            hog.push(vec![1u8; 1 << 20]);
            if i % 16 == 0 {
                let _ = writeln!(out, "allocated {i} MiB");
            }
        }
        let _ = writeln!(out, "allocated {mb} MiB, all of it");
    }
    // `--fork-loop`: start copies of itself that sleep, until the system refuses.
    if args.iter().any(|a| a == "--fork-loop") {
        let me = std::env::current_exe().unwrap_or_default();
        let mut children = Vec::new();
        let refusal = loop {
            let child = std::process::Command::new(&me)
                .arg("--sleep-forever")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            match child {
                Ok(child) => children.push(child),
                Err(e) => break e.to_string(),
            }
            if children.len() >= 10_000 {
                break "stopped at 10000".to_owned();
            }
        };
        let _ = writeln!(out, "forked {} before: {refusal}", children.len());
    }
    // `--escape`: start a copy of itself that sleeps in a process group of its own (out of
    // reach of a signal to the server's group), and say its pid.
    if args.iter().any(|a| a == "--escape") {
        escapee(&mut out, &["--sleep-forever".to_owned()]);
    }
    // `--escape-swap N:TARGET`: such a copy that, by absolute path (so it follows the
    // directory when a restore replaces it), keeps exchanging the directories `d<i>` with
    // links `x<i>` to TARGET.
    if let Some(spec) = flag("--escape-swap") {
        let cwd = std::env::current_dir().unwrap_or_default();
        escapee(
            &mut out,
            &[
                "--swap-dirs".to_owned(),
                format!("{spec}:{}", cwd.display()),
            ],
        );
    }
    // `--litter PATH`: leave a file there (in a shared directory) and say so.
    if let Some(path) = flag("--litter") {
        match std::fs::write(&path, "left behind") {
            Ok(()) => {
                let _ = writeln!(out, "littered {path}");
            }
            Err(e) => {
                let _ = writeln!(out, "cannot litter {path}: {e}");
            }
        }
    }
    // `--swap-loop N:TARGET`: N pairs of a regular file `swap-f<i>` and a link `swap-l<i>`
    // to TARGET, exchanged with `renameat2(RENAME_EXCHANGE)` in a loop for as long as the
    // process lives: the attack on a walk that checks a name, then opens it.
    if let Some((pairs, target)) = flag("--swap-loop").and_then(|v| {
        let (n, target) = v.split_once(':')?;
        Some((n.parse::<usize>().ok()?, target.to_owned()))
    }) {
        for i in 0..pairs {
            let file = format!("swap-f{i}");
            let _ = std::fs::write(&file, "x".repeat(64));
            let _ = std::os::unix::fs::symlink(&target, format!("swap-l{i}"));
        }
        let _ = writeln!(out, "swapping {pairs} pairs");
        std::thread::spawn(move || {
            let cwd = rustix::fs::CWD;
            loop {
                for i in 0..pairs {
                    let _ = rustix::fs::renameat_with(
                        cwd,
                        format!("swap-f{i}").as_str(),
                        cwd,
                        format!("swap-l{i}").as_str(),
                        rustix::fs::RenameFlags::EXCHANGE,
                    );
                }
            }
        });
    }
    // Console input comes back as `stdin: <line>`.
    std::thread::spawn(|| {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if writeln!(std::io::stdout(), "stdin: {line}").is_err() {
                std::process::exit(1);
            }
        }
    });
    for n in 1u64.. {
        std::thread::sleep(Duration::from_millis(interval));
        if writeln!(out, "tick {n}")
            .and_then(|()| out.flush())
            .is_err()
        {
            // Nobody reads the console any more (Wings is gone).
            std::process::exit(1);
        }
    }
}

/// Starts a copy of this program with `args` in a process group of its own and says its pid.
fn escapee(out: &mut impl Write, args: &[String]) {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().unwrap_or_default();
    let child = std::process::Command::new(&me)
        .args(args)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let _ = match child {
        Ok(child) => writeln!(out, "escapee pid={}", child.id()),
        Err(e) => writeln!(out, "escapee failed: {e}"),
    };
}
