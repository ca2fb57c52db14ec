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
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::unix::{self, ShowFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};

/// One TCP socket from a dump: the kernel's state number (`TCP_*`), its
/// two ends and its inode (what `/proc/PID/fd` links name).
#[derive(Debug, Clone, Copy)]
pub struct TcpEntry {
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
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

    /// Every TCP socket (v4 and v6) in a state a process can hold: all but
    /// TIME_WAIT and NEW_SYN_RECV, which the kernel filters out.
    pub fn tcp(&mut self, mut each: impl FnMut(TcpEntry)) -> io::Result<()> {
        let states = StateFlags::all() - StateFlags::TIME_WAIT;
        for family in [AF_INET, AF_INET6] {
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
            self.dump(request, |m| {
                if let SockDiagMessage::InetResponse(r) = m {
                    let h = &r.header;
                    let id = &h.socket_id;
                    each(TcpEntry {
                        state: h.state,
                        local: SocketAddr::new(id.source_address, id.source_port),
                        remote: SocketAddr::new(id.destination_address, id.destination_port),
                        inode: u64::from(h.inode),
                    });
                }
            })?;
        }
        Ok(())
    }

    /// The inode of every unix socket in the namespace.
    pub fn unix_inodes(&mut self, mut each: impl FnMut(u64)) -> io::Result<()> {
        let request = SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: unix::StateFlags::all(),
            inode: 0,
            show_flags: ShowFlags::empty(),
            cookie: [0xff; 8],
        });
        self.dump(request, |m| {
            if let SockDiagMessage::UnixResponse(r) = m {
                each(u64::from(r.header.inode));
            }
        })
    }

    /// Sends a dump request and hands each answer to `each` until the
    /// kernel says done. Messages of an earlier request (one abandoned by an
    /// error) are told apart by sequence number and skipped.
    fn dump(
        &mut self,
        request: SockDiagMessage,
        mut each: impl FnMut(SockDiagMessage),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, request.into());
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < size.min(self.buf.len()) {
                let bytes = &self.buf[offset..size.min(self.buf.len())];
                let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = message.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if message.header.sequence_number != self.seq {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(m) => each(m),
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    _ => {}
                }
            }
        }
    }
}

fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    Ok(socket)
}
