//! `zenith monitoring start|stop`: Prometheus on the local cluster, and a
//! postgres_exporter per running compute (control_plane::monitoring;
//! docs/monitoring.md).

use clap::Subcommand;
use control_plane::local_env::LocalEnv;
use control_plane::monitoring::MonitoringNode;

#[derive(Subcommand)]
pub enum MonitoringCmd {
    /// Generate <repo>/monitoring/prometheus.yml for this cluster and start Prometheus,
    /// with a postgres_exporter for every running compute (and every compute started later).
    Start,
    /// Stop Prometheus and the exporters.
    Stop {
        /// SIGKILL instead of SIGTERM.
        #[arg(long)]
        immediate: bool,
    },
}

pub fn monitoring(env: &LocalEnv, cmd: MonitoringCmd) -> anyhow::Result<()> {
    let m = MonitoringNode::new(env);
    match cmd {
        MonitoringCmd::Start => {
            for line in m.start()? {
                println!("{line}");
            }
            println!("Prometheus: {}", m.url());
        }
        MonitoringCmd::Stop { immediate } => {
            let lines = m.stop(immediate)?;
            if lines.is_empty() {
                println!("monitoring was not running");
            }
            for line in lines {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The `zenith status` line(s) of monitoring.
pub fn status(env: &LocalEnv) -> anyhow::Result<()> {
    let m = MonitoringNode::new(env);
    match m.pid()? {
        Some(pid) => {
            let exporters = m.exporters()?;
            println!(
                "monitoring: running (Prometheus pid {pid}) on {}, scraping every {}, {} compute exporter(s), log {}",
                m.url(),
                env.monitoring.scrape_interval,
                exporters.len(),
                m.log_file().display()
            );
            for (key, pid, port) in exporters {
                println!(
                    "  postgres_exporter {key}: pid {pid}, port {}",
                    port.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                );
            }
        }
        None => println!("monitoring: stopped (start it with `zenith monitoring start`)"),
    }
    Ok(())
}
