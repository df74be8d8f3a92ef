//! Builds (or finds in the cache) the base image and prints its paths and the time taken.
//! Usage: `build-image <agent-binary> [cache-dir]`; the cache defaults to the contract's.

use std::time::{Duration, Instant};

use warren_image::{ImageOptions, Progress, Step};

struct Print;

impl Progress for Print {
    fn step_started(&self, step: Step) {
        eprintln!("-> {step}");
    }
    fn step_finished(&self, step: Step, elapsed: Duration) {
        eprintln!("<- {step} ({:.1} s)", elapsed.as_secs_f64());
    }
    fn message(&self, step: Step, message: &str) {
        eprintln!("   {step}: {message}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let agent = args
        .next()
        .ok_or("usage: build-image <agent-binary> [cache-dir]")?;
    let cache = args
        .next()
        .map_or_else(warren_image::default_cache_dir, Into::into);
    let started = Instant::now();
    let image =
        warren_image::ensure_base_image(&ImageOptions::new(cache, agent), &Print).map_err(|e| {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })?;
    println!("{image:#?}");
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
