//! The target's network namespace's sockets through NETLINK_SOCK_DIAG, as
//! `ss` reads them.
//!
//! Why: `/proc/PID/net/tcp` lists every TCP entry of the namespace as text,
//! TIME_WAIT ones included, which belong to no process. On a host with
//! 32,000 of them one read cost 56 ms, and 0.4–1.5 s under connection
//! churn, so a burst got 3 samples. A sock_diag dump asks the kernel for
//! the states a process can own only: TIME_WAIT (and the half-open request
//! entries, NEW_SYN_RECV) never cross into user space.
//!
//! A netlink socket answers for the namespace it was created in, so for a
//! target in another namespace it is created by a short-lived thread that
//! has `setns()`ed into the target's, and kept for the life of the source.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_packet_sock_diag::unix::{self, ShowFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};

/// One TCP socket from a dump or lookup: the kernel's state number
/// (`TCP_*`), its two ends and its inode (what `/proc/PID/fd` links name).
#[derive(Debug, Clone, Copy)]
pub struct TcpEntry {
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
}

/// What names one TCP socket to the kernel for an exact lookup: family,
/// both ends and its cookie (so a socket since closed, its 4-tuple reused,
/// answers "stale", not the newcomer).
#[derive(Debug, Clone)]
pub struct Key {
    family: u8,
    id: SocketId,
}

impl Key {
    /// Whether it is an IPv6 socket (v4-mapped ones included).
    pub fn v6(&self) -> bool {
        self.family == AF_INET6
    }

    /// The key of a connected socket from its two ends, as
    /// `getsockname`/`getpeername` give them, with no cookie yet (the
    /// kernel then matches the 4-tuple alone; its answer carries the
    /// cookie). `v6` for a TCPv6 socket, whose v4-mapped ends the kernel
    /// looks up in the IPv4 table.
    pub fn of(local: SocketAddr, remote: SocketAddr, v6: bool) -> Key {
        let v6_addr = |a: SocketAddr| match (v6, a.ip()) {
            (true, std::net::IpAddr::V4(ip)) => std::net::IpAddr::V6(ip.to_ipv6_mapped()),
            (_, ip) => ip,
        };
        let mut id = if v6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        };
        id.source_port = local.port();
        id.destination_port = remote.port();
        id.source_address = v6_addr(local);
        id.destination_address = v6_addr(remote);
        id.cookie = [0xff; 8];
        Key {
            family: if v6 { AF_INET6 } else { AF_INET },
            id,
        }
    }
}

/// Which address families a dump walks: each is a walk of the kernel's
/// whole connection table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub const BOTH: Families = Families { v4: true, v6: true };

    pub fn any(self) -> bool {
        self.v4 || self.v6
    }
}

/// A sock_diag netlink socket in the target's network namespace.
pub struct SockDiag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// One recv's worth of dump messages; the kernel fills up to this much
/// (`ss` uses 32 KiB), so a dump of a few hundred sockets is one or two
/// round trips.
const RECV_BUF: usize = 64 * 1024;

/// Exact lookups sent in one datagram: their answers (about a kilobyte
/// each of receive buffer) must fit the socket's default buffer.
const LOOKUP_CHUNK: usize = 64;

/// What a dump's handler says after each answer.
enum Flow {
    More,
    Done,
}

impl SockDiag {
    /// A socket for `pid`'s network namespace: created here when it is ours,
    /// else on a thread that joins it (CAP_SYS_ADMIN). Fails when the
    /// namespace cannot be read or joined, or netlink is refused.
    pub fn open_for(pid: i32) -> io::Result<Self> {
        let theirs = File::open(format!("/proc/{pid}/ns/net"))?;
        let ours = std::fs::metadata("/proc/self/ns/net")?;
        let same = {
            let m = theirs.metadata()?;
            (m.dev(), m.ino()) == (ours.dev(), ours.ino())
        };
        let socket = if same {
            open_socket()?
        } else {
            // setns() moves only the calling thread; the socket stays bound
            // to the namespace it was made in when the thread ends.
            std::thread::Builder::new()
                .name("leakscope-netns".into())
                .spawn(move || {
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&theirs),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )?;
                    open_socket()
                })?
                .join()
                .map_err(|_| io::Error::other("the namespace thread panicked"))??
        };
        Ok(SockDiag {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Every TCP socket (v4 and v6) in `states`, with the key to look it up
    /// again. The kernel walks its whole connection table for each family
    /// asked, TIME_WAIT entries too (about 100 ns each), but sends only what
    /// matches; asked for LISTEN alone it walks only the listeners.
    pub fn tcp_dump(
        &mut self,
        families: Families,
        states: StateFlags,
        mut each: impl FnMut(TcpEntry, Key),
    ) -> io::Result<()> {
        let asked = [(families.v4, AF_INET), (families.v6, AF_INET6)];
        for family in asked.into_iter().filter(|(a, _)| *a).map(|(_, f)| f) {
            let request = SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: states.clone(),
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            });
            let seq = self.send(std::iter::once(request), NLM_F_REQUEST | NLM_F_DUMP)?;
            self.answers(seq, 1, true, |m| {
                match m {
                    Some(SockDiagMessage::InetResponse(r)) => {
                        let id = r.header.socket_id.clone();
                        each(entry(&r.header), Key { family, id });
                    }
                    None => return Flow::Done,
                    _ => {}
                }
                Flow::More
            })?;
        }
        Ok(())
    }

    /// The sockets `keys` name, as they are now, by exact lookups (one
    /// hash lookup each in the kernel, whatever else the host holds), sent
    /// [`LOOKUP_CHUNK`] to a datagram. A socket since closed is left out.
    pub fn tcp_lookup(
        &mut self,
        keys: &[Key],
        mut each: impl FnMut(TcpEntry, Key),
    ) -> io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // In chunks: the kernel answers a whole batch before the first
        // recv, and past ~150 answers they overflow the socket's receive
        // buffer (ENOBUFS).
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            self.lookup_chunk(chunk, &mut each)?;
        }
        Ok(())
    }

    fn lookup_chunk(
        &mut self,
        keys: &[Key],
        each: &mut impl FnMut(TcpEntry, Key),
    ) -> io::Result<()> {
        let requests = keys.iter().map(|k| {
            SockDiagMessage::InetRequest(InetRequest {
                family: k.family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: k.id.clone(),
            })
        });
        let first = self.send(requests, NLM_F_REQUEST)?;
        let mut left = keys.len();
        self.answers(first, keys.len() as u32, false, |m| {
            if let Some(SockDiagMessage::InetResponse(r)) = m {
                let key = Key {
                    family: r.header.family,
                    id: r.header.socket_id.clone(),
                };
                each(entry(&r.header), key);
            }
            // Each request has one answer: the socket, or an error.
            left -= 1;
            match left {
                0 => Flow::Done,
                _ => Flow::More,
            }
        })
    }

    /// The inode of every unix socket in the namespace.
    pub fn unix_inodes(&mut self, mut each: impl FnMut(u64)) -> io::Result<()> {
        let request = SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: unix::StateFlags::all(),
            inode: 0,
            show_flags: ShowFlags::empty(),
            cookie: [0xff; 8],
        });
        let seq = self.send(std::iter::once(request), NLM_F_REQUEST | NLM_F_DUMP)?;
        self.answers(seq, 1, true, |m| match m {
            Some(SockDiagMessage::UnixResponse(r)) => {
                each(u64::from(r.header.inode));
                Flow::More
            }
            Some(_) => Flow::More,
            None => Flow::Done,
        })
    }

    /// Sends `requests` in one datagram, numbered from the sequence number
    /// it returns.
    fn send(
        &mut self,
        requests: impl Iterator<Item = SockDiagMessage>,
        flags: u16,
    ) -> io::Result<u32> {
        let first = self.seq.wrapping_add(1);
        let mut out = Vec::new();
        for request in requests {
            self.seq = self.seq.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = flags;
            header.sequence_number = self.seq;
            let mut packet = NetlinkMessage::new(header, request.into());
            packet.finalize();
            let at = out.len();
            out.resize(at + packet.buffer_len(), 0);
            packet.serialize(&mut out[at..]);
        }
        self.socket.send(&out, 0)?;
        Ok(first)
    }

    /// Hands each answer to requests `first..first + count` to `handle`
    /// (`None` for the end of a dump) until it says done. An error ends a
    /// `dump` as an error; in a batch of lookups it is that socket's answer
    /// (gone, or stale), given as `None`. Messages of an earlier request (one
    /// abandoned by an error) are told apart by sequence number and skipped.
    fn answers(
        &mut self,
        first: u32,
        count: u32,
        dump: bool,
        mut handle: impl FnMut(Option<SockDiagMessage>) -> Flow,
    ) -> io::Result<()> {
        let ours = |seq: u32| seq.wrapping_sub(first) < count;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let end = size.min(self.buf.len());
            let mut offset = 0;
            while offset < end {
                let message =
                    NetlinkMessage::<SockDiagMessage>::deserialize(&self.buf[offset..end])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = message.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if !ours(message.header.sequence_number) {
                    continue;
                }
                let flow = match message.payload {
                    NetlinkPayload::InnerMessage(m) => handle(Some(m)),
                    NetlinkPayload::Done(_) => handle(None),
                    NetlinkPayload::Error(e) if e.code.is_some() && dump => return Err(e.to_io()),
                    NetlinkPayload::Error(_) => handle(None),
                    _ => Flow::More,
                };
                if let Flow::Done = flow {
                    return Ok(());
                }
            }
        }
    }
}

fn entry(h: &InetResponseHeader) -> TcpEntry {
    let id = &h.socket_id;
    TcpEntry {
        state: h.state,
        local: SocketAddr::new(id.source_address, id.source_port),
        remote: SocketAddr::new(id.destination_address, id.destination_port),
        inode: u64::from(h.inode),
    }
}

fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    Ok(socket)
}
