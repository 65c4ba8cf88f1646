//! One stream to the panel: open it ([`open`]: credentials, TLS, `Hello`), then run it
//! ([`pump`]: heartbeats, reports and answers up, commands down) until it ends — and renew the
//! certificate on it when it is due or the panel asks (`Rotate`). A renewed certificate is
//! installed, a second stream is opened with it while the first still runs, the commands the
//! panel sent on the first before it switched are still carried out, and the agent goes on on
//! the second ([`Ended::handover`]): the node is never offline for a renewal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::node::v1::node_control_client::NodeControlClient;
use proto::node::v1::{
    ConsoleLine, Heartbeat, Hello, NodeMessage, PanelMessage, RenewRequest, node_message,
    panel_message,
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::agent::{AgentStatus, capacity, carry_over, describe, hostname};
use crate::config::Config;
use crate::renew::{Files, Presented, Renewal};
use crate::supervisor::{Supervisor, Uplink};
use crate::{tls, unix_ms};

/// How long the old stream is still read after a handover, for commands already on it.
const DRAIN_OLD_STREAM: Duration = Duration::from_secs(2);

/// How a stream ended.
pub struct Ended {
    /// Why, as the panel or the network said it.
    pub reason: String,
    /// The panel asked for an immediate reconnect (it is restarting).
    pub reconnect_now: bool,
    /// The stream had been up long enough to count as healthy.
    pub was_online: bool,
    /// A stream already open on a renewed certificate, to go on with at once.
    pub handover: Option<Opened>,
}

impl Ended {
    fn failed(reason: String) -> Ended {
        Ended {
            reason,
            reconnect_now: false,
            was_online: false,
            handover: None,
        }
    }
}

/// A stream whose `Hello` is sent, not yet welcomed.
pub struct Opened {
    // Kept for the life of the stream (the control connection).
    _client: NodeControlClient<Channel>,
    // File transfers' own connections (to this panel, and to the replicas file requests
    // name), made with the same TLS identity on first use.
    links: Arc<crate::files::Links>,
    tx: mpsc::Sender<NodeMessage>,
    inbound: Streaming<PanelMessage>,
    answers: Vec<NodeMessage>,
    backlog: Vec<ConsoleLine>,
    io_error: tls::FirstIoError,
    presented: Presented,
    started: Instant,
}

fn files(config: &Config) -> Files {
    Files {
        key: config.key_file.clone(),
        cert: config.cert_file.clone(),
        ca: config.ca_file.clone(),
    }
}

/// Opens a stream and runs it.
pub async fn session(
    config: &Config,
    supervisor: &Arc<Supervisor>,
    uplink: &mut Uplink,
    status: &watch::Sender<AgentStatus>,
    renewal: &mut Renewal,
) -> Ended {
    match open(config, supervisor, uplink, renewal.previous_first).await {
        Ok(opened) => pump(config, supervisor, uplink, status, renewal, opened).await,
        Err(ended) => {
            // The renewed certificate was refused: the next attempt presents the kept one.
            if ended.reason.contains("fingerprint_mismatch") && files(config).has_previous() {
                renewal.previous_first = !renewal.previous_first;
            }
            ended
        }
    }
}

/// Loads the credentials, connects, sends `Hello` with the current snapshot.
pub async fn open(
    config: &Config,
    supervisor: &Arc<Supervisor>,
    uplink: &mut Uplink,
    previous_first: bool,
) -> Result<Opened, Ended> {
    let started = Instant::now();
    let (tls, presented) = match tls::load(config, &files(config), previous_first) {
        Ok(loaded) => loaded,
        Err(e) => return Err(Ended::failed(format!("cannot load credentials: {e}"))),
    };
    let links = Arc::new(crate::files::Links::new(
        &config.panel_host,
        config.panel_port,
        tls.clone(),
    ));
    let control = tls::Purpose::Control;
    let (mut client, io_error) =
        match tls::connect(&config.panel_host, config.panel_port, tls, control).await {
            Ok(connected) => connected,
            Err(e) => return Err(Ended::failed(e.to_string())),
        };
    let (tx, rx) = mpsc::channel(256);
    // Statuses, console lines and usage queued while disconnected are older than this
    // snapshot (taken under the same lock as every report), which says where things are now;
    // acks and backup results are answers the panel still waits for: they follow the hello.
    let mut answers = Vec::new();
    let (servers, backlog) = supervisor.snapshot(|| {
        answers = carry_over(&mut uplink.events);
        while uplink.console.try_recv().is_ok() {}
        uplink.stats.take();
    });
    let hello = NodeMessage {
        kind: Some(node_message::Kind::Hello(Hello {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: hostname(),
            capacity: Some(capacity()),
            heartbeat_interval_secs: config.heartbeat.as_secs() as u32,
            servers,
        })),
    };
    // The channel is new and empty: this cannot fail for lack of room.
    let _ = tx.try_send(hello);
    let inbound = match client.connect(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(Ended::failed(explain(&io_error, &status))),
    };
    Ok(Opened {
        _client: client,
        links,
        tx,
        inbound,
        answers,
        backlog,
        io_error,
        presented,
        started,
    })
}

fn explain(io_error: &tls::FirstIoError, status: &tonic::Status) -> String {
    let text = describe(status);
    match io_error.get() {
        Some(io) if !text.contains(&io) => format!("{text} ({io})"),
        _ => text,
    }
}

/// Runs an opened stream until it ends or hands over to a renewed one.
pub async fn pump(
    config: &Config,
    supervisor: &Arc<Supervisor>,
    uplink: &mut Uplink,
    status: &watch::Sender<AgentStatus>,
    renewal: &mut Renewal,
    opened: Opened,
) -> Ended {
    let Opened {
        tx,
        mut inbound,
        answers,
        backlog,
        io_error,
        presented,
        started,
        links,
        ..
    } = opened;
    let mut answers = answers.into_iter();
    let mut backlog = backlog.into_iter();
    renewal.new_certificate();
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.tick().await;
    let mut seq = 0u64;
    let closed = |started: Instant| Ended {
        reason: "stream closed".into(),
        reconnect_now: false,
        was_online: started.elapsed() > Duration::from_secs(30),
        handover: None,
    };
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    loop {
        let renew_at = if renewal.is_pending() {
            far()
        } else {
            renewal.deadline(&presented, OffsetDateTime::now_utc())
        };
        let answer_by = renewal.answer_deadline().unwrap_or_else(far);
        let mut renew_now = false;
        // In this order: a status goes up before the console lines that follow it (a
        // program's output after its `running`); console output, the one stream that can
        // flood, comes last and so never holds up heartbeats, renewals or commands.
        tokio::select! {
            biased;
            Some(message) = uplink.events.recv() => {
                if tx.send(message).await.is_err() {
                    return closed(started);
                }
            }
            () = uplink.stats.ready() => {
                for stats in uplink.stats.take() {
                    let message = NodeMessage { kind: Some(node_message::Kind::Stats(stats)) };
                    if tx.send(message).await.is_err() {
                        return closed(started);
                    }
                }
            }
            _ = ticker.tick() => {
                seq += 1;
                let beat = NodeMessage {
                    kind: Some(node_message::Kind::Heartbeat(Heartbeat {
                        seq,
                        sent_at_unix_ms: unix_ms(),
                    })),
                };
                if tx.send(beat).await.is_err() {
                    return closed(started);
                }
            }
            _ = tokio::time::sleep_until(renew_at) => renew_now = true,
            _ = tokio::time::sleep_until(answer_by) => {
                let backoff = renewal.failed();
                tracing::warn!(retry_in_s = backoff.as_secs(), "the panel did not answer the renewal; keeping the current certificate");
            }
            message = inbound.message() => match message {
                Ok(Some(message)) => match message.kind {
                    Some(panel_message::Kind::Welcome(welcome)) => {
                        tracing::info!(node = %welcome.node_id, fingerprint = %presented.fingerprint, "connected to the panel");
                        let _ = status.send(AgentStatus::Online);
                        welcomed(config, renewal, &presented);
                        for message in answers.by_ref() {
                            if tx.send(message).await.is_err() {
                                return closed(started);
                            }
                        }
                        for line in backlog.by_ref() {
                            let message = NodeMessage { kind: Some(node_message::Kind::Console(line)) };
                            if tx.send(message).await.is_err() {
                                return closed(started);
                            }
                        }
                    }
                    Some(panel_message::Kind::Command(command)) => {
                        tracing::debug!(command = %command.id, server = %command.server_id, "command");
                        supervisor.handle(command);
                    }
                    Some(panel_message::Kind::File(request)) => {
                        crate::files::serve(links.clone(), supervisor.clone(), request);
                    }
                    Some(panel_message::Kind::Rotate(_)) => {
                        tracing::info!("the panel asks for a renewal now");
                        renew_now = !renewal.is_pending();
                    }
                    Some(panel_message::Kind::RenewFailed(failed)) => {
                        renewal.take_key();
                        let backoff = renewal.failed();
                        tracing::warn!(code = %failed.code, reason = %failed.message, retry_in_s = backoff.as_secs(), "renewal refused; keeping the current certificate");
                    }
                    Some(panel_message::Kind::Renewed(renewed)) => {
                        trust(config, &renewed.ca_bundle);
                        if let Some(next) = handover(config, supervisor, uplink, renewal, &renewed.certificate, &renewed.chain).await {
                            drain(supervisor, &mut inbound).await;
                            return Ended {
                                reason: "renewed certificate".into(),
                                reconnect_now: true,
                                was_online: true,
                                handover: Some(next),
                            };
                        }
                    }
                    None => {}
                },
                Ok(None) => {
                    return Ended { reason: "the panel closed the stream".into(), reconnect_now: false, was_online: true, handover: None };
                }
                Err(status) => {
                    return Ended {
                        reason: explain(&io_error, &status),
                        reconnect_now: status.code() == tonic::Code::Unavailable && status.message().starts_with("shutting_down"),
                        was_online: true,
                        handover: None,
                    };
                }
            },
            Some(message) = uplink.console.recv() => {
                if tx.send(message).await.is_err() {
                    return closed(started);
                }
            }
        }
        if renew_now {
            match renewal.start(&config.node_id) {
                Ok(csr) => {
                    tracing::info!(not_after = %presented.not_after, "renewing the certificate");
                    let request = NodeMessage {
                        kind: Some(node_message::Kind::Renew(RenewRequest { csr })),
                    };
                    if tx.send(request).await.is_err() {
                        return closed(started);
                    }
                }
                Err(e) => {
                    let backoff = renewal.failed();
                    tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "cannot make a key for the renewal");
                }
            }
        }
    }
}

/// The panel welcomed `presented`: a renewed certificate is promoted (the previous pair goes);
/// the kept previous pair in use means the renewed one was refused (it is put back, and the
/// renewal tried again later).
fn welcomed(config: &Config, renewal: &mut Renewal, presented: &Presented) {
    let files = files(config);
    if presented.previous {
        if let Err(e) = files.restore_previous() {
            tracing::warn!(error = %e, "cannot put the previous certificate back");
        }
        let backoff = renewal.failed();
        renewal.previous_first = false;
        tracing::warn!(
            retry_in_s = backoff.as_secs(),
            "the renewed certificate was refused; back on the previous one"
        );
    } else if files.has_previous() {
        files.retire_previous();
        renewal.succeeded();
        tracing::info!(fingerprint = %presented.fingerprint, "renewed certificate promoted; the old key is deleted");
    }
}

/// Trusts the roots the panel sent with a renewal (over the authenticated stream) for the
/// panel's certificate from now on (`WINGS_API_CA_CERT`, replaced atomically; the old roots
/// come back if the renewed stream cannot be opened). Nothing usable changes nothing.
fn trust(config: &Config, bundle: &str) {
    if bundle.trim().is_empty() {
        return;
    }
    match files(config).trust(bundle) {
        Ok(true) => {
            tracing::info!(file = %config.ca_file.display(), "trusted roots updated from the panel")
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "ignoring the panel's roots"),
    }
}

/// Installs the renewed certificate and opens a stream with it. `None` (the files restored,
/// the renewal retried later) when the key is gone, the install fails or the new stream
/// cannot be opened.
async fn handover(
    config: &Config,
    supervisor: &Arc<Supervisor>,
    uplink: &mut Uplink,
    renewal: &mut Renewal,
    certificate: &str,
    chain: &str,
) -> Option<Opened> {
    let key = renewal.take_key()?;
    let files = files(config);
    if let Err(e) = files.install(&key, &format!("{certificate}{chain}")) {
        let backoff = renewal.failed();
        tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "cannot install the renewed certificate");
        let _ = files.restore_previous();
        return None;
    }
    match open(config, supervisor, uplink, false).await {
        Ok(next) => Some(next),
        Err(ended) => {
            let _ = files.restore_previous();
            let backoff = renewal.failed();
            tracing::warn!(reason = %ended.reason, retry_in_s = backoff.as_secs(), "the renewed certificate did not connect; keeping the current one");
            None
        }
    }
}

/// Reads what is left on the old stream after the new one took over: commands the panel sent
/// before it switched are still carried out. Ends when the panel closes it, or after
/// [`DRAIN_OLD_STREAM`].
async fn drain(supervisor: &Arc<Supervisor>, inbound: &mut Streaming<PanelMessage>) {
    let deadline = tokio::time::sleep(DRAIN_OLD_STREAM);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            message = inbound.message() => match message {
                Ok(Some(PanelMessage { kind: Some(panel_message::Kind::Command(command)) })) => {
                    supervisor.handle(command);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }
}
