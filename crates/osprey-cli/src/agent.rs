//! `osprey agent` and `osprey ctl`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use osprey::agent::config::AgentConfig;
use osprey::agent::control::{self, Request};
use osprey::agent::{Agent, AgentError};
use osprey::kernel::privileges;

use crate::Failure;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// TOML configuration (every option and its default: deploy/osprey.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Overrides `state_dir`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Overrides `metrics.listen` (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Overrides `log.path` ("-" for stdout).
    #[arg(long, value_name = "PATH")]
    pub log: Option<String>,
    /// Overrides `control_socket`.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The agent's control socket.
    #[arg(long, value_name = "PATH", default_value = "/run/osprey/agent.sock")]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub action: CtlAction,
}

#[derive(Subcommand, Debug)]
pub enum CtlAction {
    /// Modules and programs with their statistics.
    List,
    /// Load and attach a module.
    Enable { module: String },
    /// Detach and unload a module.
    Disable { module: String },
    /// Re-read the configuration file (like SIGHUP).
    Reload,
}

pub fn run_agent(args: AgentArgs) -> Result<ExitCode, Failure> {
    let mut config = match &args.config {
        Some(path) => AgentConfig::load(path).map_err(|e| Failure::Usage(e.to_string()))?,
        None => AgentConfig::default(),
    };
    let AgentArgs {
        config: config_path,
        state_dir,
        metrics_listen,
        log,
        control_socket,
    } = args;
    let overrides = move |c: &mut AgentConfig| {
        if let Some(d) = &state_dir {
            c.state_dir = d.clone();
        }
        if let Some(l) = metrics_listen {
            c.metrics.listen = l;
        }
        if let Some(p) = &log {
            c.log.path = p.clone();
        }
        if let Some(s) = &control_socket {
            c.control_socket = s.clone();
        }
    };
    overrides(&mut config);
    let missing = privileges::missing_for_tracing(privileges::effective());
    if !missing.is_empty() {
        return Err(Failure::Privilege(format!(
            "osprey agent needs {} to load and attach its programs",
            missing.join(" and ")
        )));
    }
    let agent = Agent {
        config,
        config_path,
        overrides: Box::new(overrides),
    };
    match agent.run_blocking() {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ AgentError::Module { .. }) => Err(Failure::Privilege(e.to_string())),
        Err(e @ AgentError::Invalid(_)) => Err(Failure::Usage(e.to_string())),
        Err(e) => Err(Failure::Runtime(e.into())),
    }
}

pub fn run_ctl(args: CtlArgs) -> Result<ExitCode, Failure> {
    let request = match args.action {
        CtlAction::List => Request::List,
        CtlAction::Enable { module } => Request::Enable { module },
        CtlAction::Disable { module } => Request::Disable { module },
        CtlAction::Reload => Request::Reload,
    };
    let response = control::call(&args.socket, &request).map_err(|e| {
        let msg = format!("cannot reach the agent at {}: {e}", args.socket.display());
        // The socket is root's (mode 0600): anyone else lacks the privilege, exit 77.
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Failure::Privilege(format!("{msg}; osprey ctl needs root"))
        } else {
            Failure::Runtime(anyhow::anyhow!(msg))
        }
    })?;
    // A reader that went away (`osprey ctl list | head`) is not an error of ours.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{}",
        serde_json::to_string_pretty(&response).unwrap_or_default()
    );
    Ok(if response["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
