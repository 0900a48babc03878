//! Frames from pcap and pcapng files.
//!
//! [`FileSource`] streams a capture through `pcap-parser`'s circular buffer and hands each packet
//! to a callback as a borrowed [`Frame`] with a nanosecond timestamp. pcap files may be in µs or
//! ns resolution (by magic number); pcapng interfaces declare theirs with `if_tsresol` and may
//! shift it with `if_tsoffset`, and both are honoured per interface.
//!
//! A capture is read as a stream, never whole: from a file, or from standard input when its
//! name is `-` (`tcpdump -w - | metro --pcap -`). A gzip or zstd stream (`.pcap.gz`,
//! `.pcapng.zst`, told by its magic number, not its name) is decompressed on the way; memory
//! stays the reader's bounded buffer whatever the source.
//!
//! A plain pcap file that [`FileSource::open_mapped`] opens is parsed in place instead, through a
//! window of a memory map ([`super::mapped`]), with no copy: the common case of `--pcap`, where
//! the stream's copying was a tenth of the time. Only whole, ordinary records are read there; at
//! anything else (a record cut short or larger than any frame, an error) the stream reader takes
//! over from the file's start, passing on only the frames not yet passed, so the frames, counts
//! and errors are exactly the stream's.
//!
//! Damaged input never panics and never loops: a file that is not a capture is refused at
//! open, a record that breaks off or cannot be parsed ends the read with an error that says where,
//! and the caller keeps what it gathered up to that point.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{create_reader, PcapBlockOwned, PcapError};

use super::mapped::MappedFile;
use super::{Frame, LinkType};

/// The reader's first buffer size; enough for any ordinary record.
const INITIAL_BUFFER: usize = 256 * 1024;
/// The largest record metro will buffer. pcap's largest snap length is 256 KiB; pcapng blocks
/// can claim up to 4 GiB, which only a hostile file does.
const MAX_BUFFER: usize = 16 * 1024 * 1024;

/// Why a capture file could not be read (to the end).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is empty.
    #[error("{path} is empty: a pcap or pcapng capture was expected")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file starts with neither a pcap nor a pcapng header.
    #[error("{path} is not a pcap or pcapng capture (unrecognised header{}); write captures with `tcpdump -w FILE`", compression.map(|c| format!(" after {c} decompression")).unwrap_or_default())]
    NotCapture {
        /// The file.
        path: PathBuf,
        /// The compression it was read through, if any.
        compression: Option<&'static str>,
    },
    /// A compressed stream could not be decompressed.
    #[error("{path}: the {compression} stream is damaged at byte {offset} of the capture inside it ({detail}); check it with `{tool} -t`")]
    Decompress {
        /// The file.
        path: PathBuf,
        /// gzip or zstd.
        compression: &'static str,
        /// The command-line tool that tests such a stream.
        tool: &'static str,
        /// Capture bytes read before the damage.
        offset: u64,
        /// What the decoder said.
        detail: String,
    },
    /// The file ends in the middle of a record.
    #[error("{path} ends in the middle of a record at byte {offset}: the capture is cut short (was it still being written?)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes read before the broken record.
        offset: u64,
    },
    /// A record could not be parsed, or claims an impossible size.
    #[error("{path} is damaged at byte {offset}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Bytes read before the damaged record.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
}

/// What the reader saw besides packets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileStats {
    /// Packet records read.
    pub records: u64,
    /// Packets on an interface whose link type metro does not decode.
    pub unknown_link: u64,
    /// pcapng packets with no usable timestamp (simple packet blocks, unknown interface ids).
    pub untimed: u64,
}

/// One interface of the file: its link type and how its timestamps read (pcapng IDB fields; a
/// classic pcap file has one, from its header).
#[derive(Clone, Copy)]
struct FileIface {
    link: Option<LinkType>,
    /// Timestamp units per second.
    units: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_s: i64,
}

/// A pcap or pcapng capture, read as a stream of frames.
pub struct FileSource {
    input: Input,
}

enum Input {
    /// A plain pcap file, parsed in place.
    Mapped(Box<Mapped>),
    Buffered(Buffered),
}

/// A capture read through `pcap-parser`'s buffer (pcapng, compressed, standard input, or
/// the rest of a plain file after the map).
struct Buffered {
    path: PathBuf,
    /// Frames not to pass on: those the mapped reader passed before the stream took over.
    skip: u64,
    reader: Box<dyn PcapReaderIterator + Send>,
    /// The compression the capture is read through, and the last error its decoder gave.
    compression: Option<(
        Compression,
        std::sync::Arc<std::sync::Mutex<Option<String>>>,
    )>,
    legacy: Option<FileIface>,
    interfaces: Vec<FileIface>,
    consumed: u64,
    stats: FileStats,
}

/// The name that reads standard input.
pub const STDIN: &str = "-";

/// The compressions read transparently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// Which one a stream's first bytes announce (RFC 1952 §2.3.1, RFC 8878 §3.1.1).
    fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A reader that keeps the last error it returned, for the message: pcap-parser reports a
/// failed read without its cause.
struct Noting<R> {
    inner: R,
    last: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl<R: Read> Read for Noting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if let Ok(mut last) = self.last.lock() {
                *last = Some(e.to_string());
            }
        })
    }
}

/// Every frame of a zstd stream in turn (`zstd a b > c` and parallel compressors write several);
/// the decoder itself stops after one.
struct ZstdFrames<R: Read> {
    decoder: Option<ZstdDecoder<R>>,
}

type ZstdDecoder<R> =
    ruzstd::decoding::StreamingDecoder<BufReader<R>, ruzstd::decoding::FrameDecoder>;

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let d = self
                .decoder
                .as_mut()
                .ok_or_else(|| io::Error::other("a zstd frame header could not be read"))?;
            let n = d.read(buf)?;
            if n > 0 || buf.is_empty() || d.get_mut().fill_buf()?.is_empty() {
                return Ok(n);
            }
            let Some(done) = self.decoder.take() else {
                return Ok(0);
            };
            let (source, frame) = done.into_parts();
            let next = ruzstd::decoding::StreamingDecoder::new_with_decoder(source, frame)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.decoder = Some(next);
        }
    }
}

impl FileSource {
    /// Opens a capture and checks that it is pcap or pcapng; [`STDIN`] reads standard input.
    /// The capture is read as a stream, so it may be a pipe or a file still being written.
    pub fn open(path: &Path) -> Result<FileSource, FileError> {
        if path.as_os_str() == STDIN {
            return FileSource::from_reader(Path::new("standard input"), io::stdin());
        }
        FileSource::from_reader(path, open_file(path)?)
    }

    /// [`FileSource::open`] for a capture read once, whole, that nothing else writes or
    /// truncates meanwhile: a plain pcap file is then parsed in place (see the module doc).
    pub fn open_mapped(path: &Path) -> Result<FileSource, FileError> {
        if path.as_os_str() == STDIN {
            return FileSource::open(path);
        }
        match Mapped::open(path, open_file(path)?) {
            Ok(m) => Ok(FileSource {
                input: Input::Mapped(Box::new(m)),
            }),
            Err(file) => FileSource::from_reader(path, file),
        }
    }

    /// Reads a capture from any byte stream, decompressing gzip and zstd; `path` is only used
    /// in messages.
    pub fn from_reader(
        path: &Path,
        input: impl Read + Send + 'static,
    ) -> Result<FileSource, FileError> {
        Ok(FileSource {
            input: Input::Buffered(Buffered::from_reader(path, input)?),
        })
    }

    /// What was read so far.
    pub fn stats(&self) -> FileStats {
        match &self.input {
            Input::Mapped(m) => m.stats,
            Input::Buffered(s) => s.stats,
        }
    }

    /// Calls `f` with every packet, in file order, until the end of the file or an error.
    /// Frames on interfaces with an undecodable link type are counted, not passed on.
    pub fn for_each(&mut self, mut f: impl FnMut(LinkType, &Frame<'_>)) -> Result<(), FileError> {
        self.read_while(|link, frame| {
            f(link, frame);
            true
        })
        .map(|_| ())
    }

    /// Calls `f` with packets, in file order, until it returns false (true is then returned),
    /// the end of the file (false) or an error.
    pub fn read_while(
        &mut self,
        mut f: impl FnMut(LinkType, &Frame<'_>) -> bool,
    ) -> Result<bool, FileError> {
        if let Input::Mapped(m) = &mut self.input {
            if let Some(done) = m.read_while(&mut f) {
                return Ok(done);
            }
            // Something only the stream reader reads (or reports) as it should.
            let stream = m.stream()?;
            self.input = Input::Buffered(stream);
        }
        match &mut self.input {
            Input::Buffered(s) => s.read_while(f),
            Input::Mapped(_) => unreachable!("replaced above"),
        }
    }
}

fn open_file(path: &Path) -> Result<File, FileError> {
    File::open(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The largest record parsed in place, header included: far above any frame, and below the
/// stream reader's first buffer, so that every record parsed in place is one the stream reader
/// would pass on as it is. A larger one (a damaged file, mostly) is left to the stream reader,
/// which bounds and reports it.
const MAPPED_RECORD_MAX: usize = INITIAL_BUFFER / 2;
/// A pcap record's header: seconds, sub-seconds, captured and original lengths.
const RECORD_HEADER: usize = 16;
/// A pcap file's header.
const FILE_HEADER: usize = 24;

/// A plain pcap file parsed in place, through a map (see the module doc).
struct Mapped {
    path: PathBuf,
    file: MappedFile,
    /// The file offset of the next record.
    pos: u64,
    big_endian: bool,
    link: LinkType,
    /// Nanoseconds in one unit of a record's sub-second field.
    sub_ns: u64,
    /// Frames passed on: the ones a stream reader that takes over skips.
    delivered: u64,
    stats: FileStats,
}

impl Mapped {
    /// The file, parsed in place when it is a regular file that starts with a pcap header this
    /// reader takes (not the modified format, a link type metro decodes); else the file back,
    /// unread, for the stream reader.
    fn open(path: &Path, file: File) -> Result<Mapped, File> {
        let mut file = MappedFile::new(file)?;
        let header = match file.view(0, FILE_HEADER) {
            Ok(b) if b.len() >= FILE_HEADER => pcap_parser::parse_pcap_header(&b[..FILE_HEADER])
                .ok()
                .map(|(_, h)| h),
            _ => None,
        };
        let Some(h) = header else {
            return Err(file.into_file());
        };
        let link = LinkType::from_linktype(h.network.0 as u32);
        let (Some(link), false) = (link, h.is_modified_format()) else {
            return Err(file.into_file());
        };
        Ok(Mapped {
            path: path.to_owned(),
            file,
            pos: FILE_HEADER as u64,
            big_endian: h.is_bigendian(),
            link,
            sub_ns: if h.is_nanosecond_precision() {
                1
            } else {
                1_000
            },
            delivered: 0,
            stats: FileStats::default(),
        })
    }

    /// [`FileSource::read_while`]: `Some` with its result, or `None` where the stream reader
    /// must take over.
    fn read_while(&mut self, f: &mut impl FnMut(LinkType, &Frame<'_>) -> bool) -> Option<bool> {
        let Mapped {
            file,
            pos,
            big_endian,
            link,
            sub_ns,
            delivered,
            stats,
            ..
        } = self;
        let (link, sub_ns) = (*link, *sub_ns);
        let word = |b: &[u8], at: usize| {
            let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            if *big_endian {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        let mut reloaded = false;
        loop {
            let bytes = if reloaded {
                file.reload(*pos, MAPPED_RECORD_MAX)
            } else {
                file.view(*pos, MAPPED_RECORD_MAX)
            }
            .ok()?;
            if bytes.is_empty() {
                return Some(false);
            }
            // Every whole record in the view; the view holds at least MAPPED_RECORD_MAX bytes
            // unless the file ends sooner.
            let mut at = 0;
            while let Some(h) = bytes.get(at..at + RECORD_HEADER) {
                let caplen = word(h, 8) as usize;
                let Some(data) = bytes.get(at + RECORD_HEADER..at + RECORD_HEADER + caplen) else {
                    break;
                };
                let frame = Frame {
                    ts_ns: u64::from(word(h, 0)) * 1_000_000_000 + u64::from(word(h, 4)) * sub_ns,
                    data,
                    wire_len: wire_len(word(h, 12), data),
                };
                at += RECORD_HEADER + caplen;
                stats.records += 1;
                *delivered += 1;
                if !f(link, &frame) {
                    *pos += at as u64;
                    return Some(true);
                }
            }
            if at == 0 {
                if reloaded {
                    // A record cut short, or larger than any frame: the stream reader's case.
                    return None;
                }
                // Perhaps the file has grown since its end was last seen.
                reloaded = true;
            } else {
                *pos += at as u64;
                reloaded = false;
            }
        }
    }

    /// The stream reader that takes over: it reads the file again from its start, skipping
    /// the frames passed on already, so that what it passes on and counts is exactly what it
    /// would have from the start.
    fn stream(&self) -> Result<Buffered, FileError> {
        let io_error = |source| FileError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = self.file.file().try_clone().map_err(io_error)?;
        io::Seek::rewind(&mut file).map_err(io_error)?;
        let mut stream = Buffered::from_reader(&self.path, file)?;
        stream.skip = self.delivered;
        Ok(stream)
    }
}

impl Buffered {
    fn from_reader(path: &Path, input: impl Read + Send + 'static) -> Result<Buffered, FileError> {
        let io_error = |source| FileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut input = BufReader::new(input);
        let head = input.fill_buf().map_err(io_error)?;
        let compression = Compression::sniff(head);
        let last = std::sync::Arc::new(std::sync::Mutex::new(None));
        let stream: Box<dyn Read + Send> = match compression {
            None => Box::new(input),
            Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Some(Compression::Zstd) => {
                let decoder = ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| {
                    FileError::Decompress {
                        path: path.to_owned(),
                        compression: "zstd",
                        tool: "zstd",
                        offset: 0,
                        detail: e.to_string(),
                    }
                })?;
                Box::new(ZstdFrames {
                    decoder: Some(decoder),
                })
            }
        };
        let stream = Noting {
            inner: stream,
            last: last.clone(),
        };
        let reader = create_reader(INITIAL_BUFFER, stream).map_err(|e| match e {
            PcapError::Eof => FileError::Empty {
                path: path.to_owned(),
            },
            PcapError::ReadError => FileError::Io {
                path: path.to_owned(),
                source: io::Error::other("read failed"),
            },
            PcapError::Incomplete(_) => FileError::Truncated {
                path: path.to_owned(),
                offset: 0,
            },
            _ => FileError::NotCapture {
                path: path.to_owned(),
                compression: compression.map(Compression::name),
            },
        })?;
        Ok(Buffered {
            path: path.to_owned(),
            skip: 0,
            reader,
            compression: compression.map(|c| (c, last)),
            legacy: None,
            interfaces: Vec::new(),
            consumed: 0,
            stats: FileStats::default(),
        })
    }

    /// [`FileSource::read_while`].
    fn read_while(
        &mut self,
        mut f: impl FnMut(LinkType, &Frame<'_>) -> bool,
    ) -> Result<bool, FileError> {
        let mut capacity = INITIAL_BUFFER;
        let mut stalled = false;
        let mut go_on = true;
        loop {
            let step = match self.reader.next() {
                Ok((len, block)) => {
                    stalled = false;
                    match block {
                        PcapBlockOwned::LegacyHeader(h) => {
                            self.legacy = Some(FileIface {
                                link: LinkType::from_linktype(h.network.0 as u32),
                                units: if h.is_nanosecond_precision() {
                                    1_000_000_000
                                } else {
                                    1_000_000
                                },
                                offset_s: 0,
                            });
                        }
                        PcapBlockOwned::Legacy(b) => {
                            self.stats.records += 1;
                            match self.legacy {
                                Some(FileIface {
                                    link: Some(link),
                                    units,
                                    ..
                                }) => {
                                    let sub = u64::from(b.ts_usec) * (1_000_000_000 / units);
                                    let data = clip(b.data, b.caplen);
                                    let frame = Frame {
                                        ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + sub,
                                        data,
                                        wire_len: wire_len(b.origlen, data),
                                    };
                                    if self.skip > 0 {
                                        self.skip -= 1;
                                    } else {
                                        go_on = f(link, &frame);
                                    }
                                }
                                _ => self.stats.unknown_link += 1,
                            }
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => self.interfaces.clear(),
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            self.interfaces.push(FileIface {
                                link: LinkType::from_linktype(idb.linktype.0 as u32),
                                // An impossible resolution leaves the interface untimed.
                                units: idb.ts_resolution().unwrap_or(0),
                                offset_s: idb.ts_offset(),
                            });
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            self.stats.records += 1;
                            match self.interfaces.get(epb.if_id as usize).copied() {
                                Some(FileIface { link: None, .. }) => self.stats.unknown_link += 1,
                                Some(FileIface {
                                    link: Some(link),
                                    units,
                                    offset_s,
                                }) if units > 0 => {
                                    let raw =
                                        (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                    let data = clip(epb.data, epb.caplen);
                                    let frame = Frame {
                                        ts_ns: to_ns(raw, units, offset_s),
                                        data,
                                        wire_len: wire_len(epb.origlen, data),
                                    };
                                    go_on = f(link, &frame);
                                }
                                _ => self.stats.untimed += 1,
                            }
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(_)) => {
                            self.stats.records += 1;
                            self.stats.untimed += 1;
                        }
                        PcapBlockOwned::NG(_) => {}
                    }
                    Step::Consume(len)
                }
                Err(PcapError::Eof) => Step::Done,
                Err(PcapError::Incomplete(_)) => Step::Refill,
                Err(PcapError::UnexpectedEof) => Step::Truncated,
                Err(PcapError::BufferTooSmall) => Step::Grow,
                Err(e) => Step::Fail(describe(&e)),
            };
            match step {
                Step::Consume(len) => {
                    self.reader.consume(len);
                    self.consumed += len as u64;
                    if !go_on {
                        return Ok(true);
                    }
                }
                Step::Done => return Ok(false),
                Step::Refill => {
                    if self.reader.reader_exhausted() {
                        // A record that breaks off at the end of the file; a file that ends
                        // exactly between records returns Eof instead.
                        if stalled || self.reader.data().is_empty() {
                            return if self.reader.data().is_empty() {
                                Ok(false)
                            } else {
                                Err(self.truncated())
                            };
                        }
                        stalled = true;
                    }
                    let before = self.reader.data().len();
                    if self.reader.refill().is_err() {
                        return Err(self.corrupt("read error while refilling the buffer".into()));
                    }
                    if self.reader.data().len() == before {
                        // Nothing new came in: either the record is larger than the buffer,
                        // or the file has ended inside it.
                        if self.reader.reader_exhausted() && stalled {
                            return Err(self.truncated());
                        }
                        if before >= capacity / 2 {
                            if capacity >= MAX_BUFFER {
                                return Err(self.corrupt(format!(
                                    "a record larger than {} MiB",
                                    MAX_BUFFER >> 20
                                )));
                            }
                            capacity *= 2;
                            self.reader.grow(capacity);
                        }
                        stalled = true;
                    }
                }
                Step::Grow => {
                    if capacity >= MAX_BUFFER {
                        return Err(
                            self.corrupt(format!("a record larger than {} MiB", MAX_BUFFER >> 20))
                        );
                    }
                    capacity *= 2;
                    self.reader.grow(capacity);
                    // grow() only resizes; pull in the rest of the record.
                    let _ = self.reader.refill();
                }
                Step::Truncated => return Err(self.truncated()),
                Step::Fail(detail) => return Err(self.corrupt(detail)),
            }
        }
    }

    fn truncated(&self) -> FileError {
        FileError::Truncated {
            path: self.path.clone(),
            offset: self.consumed,
        }
    }

    fn corrupt(&self, detail: String) -> FileError {
        if let Some((c, last)) = &self.compression {
            if let Some(why) = last.lock().ok().and_then(|mut l| l.take()) {
                return FileError::Decompress {
                    path: self.path.clone(),
                    compression: c.name(),
                    tool: c.tool(),
                    offset: self.consumed,
                    detail: why,
                };
            }
        }
        FileError::Corrupt {
            path: self.path.clone(),
            offset: self.consumed,
            detail,
        }
    }
}

enum Step {
    Consume(usize),
    Done,
    Refill,
    Grow,
    Truncated,
    Fail(String),
}

fn describe(e: &PcapError<&[u8]>) -> String {
    match e {
        PcapError::HeaderNotRecognized => "an unrecognised block header".into(),
        PcapError::NomError(_, kind) => format!("an unparsable record ({kind:?})"),
        PcapError::OwnedNomError(_, kind) => format!("an unparsable record ({kind:?})"),
        PcapError::ReadError => "a read error".into(),
        other => format!("{other:?}"),
    }
}

/// The captured bytes: pcapng pads packet data to 32 bits, and `caplen` says where it ends.
#[inline]
/// A record's original length, raised to what it holds when a damaged record claims less:
/// a [`Frame`]'s wire length is never below its captured bytes.
fn wire_len(origlen: u32, data: &[u8]) -> u32 {
    origlen.max(u32::try_from(data.len()).unwrap_or(u32::MAX))
}

fn clip(data: &[u8], caplen: u32) -> &[u8] {
    &data[..data.len().min(caplen as usize)]
}

/// Converts a pcapng timestamp in `units` per second, shifted by `offset_s`, to ns.
#[inline]
fn to_ns(raw: u64, units: u64, offset_s: i64) -> u64 {
    let secs = raw / units;
    let frac = raw % units;
    let sub = (u128::from(frac) * 1_000_000_000 / u128::from(units)) as u64;
    secs.saturating_add_signed(offset_s)
        .saturating_mul(1_000_000_000)
        .saturating_add(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_resolutions_convert_exactly() {
        assert_eq!(to_ns(1_500_000_123, 1_000_000_000, 0), 1_500_000_123);
        assert_eq!(to_ns(1_500_001, 1_000_000, 0), 1_500_001_000);
        assert_eq!(to_ns(3, 2, 10), 11_500_000_000);
    }

    fn read_all(bytes: Vec<u8>) -> (Result<(), FileError>, u64) {
        let mut n = 0;
        let r = FileSource::from_reader(Path::new("mem"), io::Cursor::new(bytes))
            .and_then(|mut s| s.for_each(|_, _| n += 1));
        (r, n)
    }

    fn pcap_header() -> Vec<u8> {
        let mut v = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v
    }

    fn record(v: &mut Vec<u8>, len: u32) {
        v.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend(std::iter::repeat_n(0, len as usize));
    }

    #[test]
    fn text_file_is_not_a_capture() {
        let (r, _) = read_all(b"hello, this is not a capture file at all\n".to_vec());
        assert!(matches!(r, Err(FileError::NotCapture { .. })), "{r:?}");
    }

    #[test]
    fn empty_file_is_refused() {
        let (r, _) = read_all(Vec::new());
        assert!(matches!(r, Err(FileError::Empty { .. })), "{r:?}");
    }

    #[test]
    fn record_cut_short_is_reported_after_the_good_ones() {
        let mut v = pcap_header();
        record(&mut v, 60);
        record(&mut v, 60);
        v.truncate(v.len() - 10);
        let (r, n) = read_all(v);
        assert_eq!(n, 1);
        assert!(matches!(r, Err(FileError::Truncated { .. })), "{r:?}");
    }

    /// Found by the `capture_file` fuzz target (its input is kept in fuzz/regressions/).
    #[test]
    fn a_record_claiming_fewer_bytes_on_the_wire_than_captured_keeps_them_all() {
        let mut v = pcap_header();
        v.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        v.extend_from_slice(&34u32.to_le_bytes());
        v.extend_from_slice(&32u32.to_le_bytes());
        v.extend(std::iter::repeat_n(0, 34));
        let mut got = Vec::new();
        let r = FileSource::from_reader(Path::new("mem"), io::Cursor::new(v))
            .and_then(|mut s| s.for_each(|_, f| got.push((f.data.len(), f.wire_len))));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(got, [(34, 34)]);
    }

    #[test]
    fn whole_file_reads_every_record() {
        let mut v = pcap_header();
        for _ in 0..1000 {
            record(&mut v, 500);
        }
        let (r, n) = read_all(v);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(n, 1000);
    }

    /// Frames (time, bytes, wire length), counts and the error's message, if any.
    type Got = (Vec<(u64, Vec<u8>, u32)>, FileStats, String);

    /// Every frame (time, bytes, wire length), the counts and the error of reading `bytes` as
    /// a file through `open_mapped`, one frame per call when `one_by_one`.
    fn read_file(bytes: &[u8], one_by_one: bool) -> Got {
        let path = std::env::temp_dir().join(format!(
            "metro-file-test-{}-{}-{}",
            std::process::id(),
            bytes.len(),
            one_by_one
        ));
        std::fs::write(&path, bytes).unwrap();
        let mut frames = Vec::new();
        let mut src = FileSource::open_mapped(&path).unwrap();
        let r = loop {
            match src.read_while(|_, f| {
                frames.push((f.ts_ns, f.data.to_vec(), f.wire_len));
                !one_by_one
            }) {
                Ok(true) => continue,
                other => break other,
            }
        };
        std::fs::remove_file(&path).unwrap();
        let err = r
            .err()
            .map(|e| e.to_string().replace(&*path.to_string_lossy(), "F"));
        (frames, src.stats(), err.unwrap_or_default())
    }

    /// The same, through the stream reader.
    fn read_stream(bytes: &[u8]) -> Got {
        let mut frames = Vec::new();
        let mut src =
            FileSource::from_reader(Path::new("F"), io::Cursor::new(bytes.to_vec())).unwrap();
        let r = src.for_each(|_, f| frames.push((f.ts_ns, f.data.to_vec(), f.wire_len)));
        (
            frames,
            src.stats(),
            r.err().map(|e| e.to_string()).unwrap_or_default(),
        )
    }

    #[test]
    fn a_mapped_file_reads_as_the_stream_does_whole_cut_or_damaged() {
        let mut whole = pcap_header();
        for i in 0..12_000u32 {
            let len = 40 + i % 1500;
            whole.extend_from_slice(&i.to_le_bytes());
            whole.extend_from_slice(&(i * 7).to_le_bytes());
            whole.extend_from_slice(&len.to_le_bytes());
            whole.extend_from_slice(&(len + i % 3).to_le_bytes());
            whole.extend((0..len).map(|b| (b ^ i) as u8));
        }
        assert!(
            whole.len() > super::super::mapped::WINDOW,
            "crosses a window"
        );
        let mut cut = whole.clone();
        cut.truncate(whole.len() - 100);
        let mut huge = whole.clone();
        huge.truncate(whole.len() / 2);
        huge.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        huge.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
        huge.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
        huge.extend(std::iter::repeat_n(0, 300_000));
        let mut big_endian = vec![0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4];
        big_endian.extend_from_slice(&[0; 8]);
        big_endian.extend_from_slice(&65535u32.to_be_bytes());
        big_endian.extend_from_slice(&1u32.to_be_bytes());
        for i in 0..10u32 {
            big_endian.extend_from_slice(&(i + 1).to_be_bytes());
            big_endian.extend_from_slice(&(i * 1_000).to_be_bytes());
            big_endian.extend_from_slice(&60u32.to_be_bytes());
            big_endian.extend_from_slice(&64u32.to_be_bytes());
            big_endian.extend(std::iter::repeat_n(i as u8, 60));
        }
        for (name, bytes) in [
            ("whole", &whole),
            ("cut", &cut),
            ("huge", &huge),
            ("big-endian ns", &big_endian),
        ] {
            let want = read_stream(bytes);
            assert!(!want.0.is_empty(), "{name}");
            assert_eq!(
                want.2.is_empty(),
                name == "whole" || name == "big-endian ns",
                "{name}"
            );
            for one_by_one in [false, true] {
                let got = read_file(bytes, one_by_one);
                assert_eq!(got.0.len(), want.0.len(), "{name}");
                assert!(got.0 == want.0, "{name}: frames differ");
                assert_eq!((got.1, &got.2), (want.1, &want.2), "{name}");
            }
        }
    }

    #[test]
    fn record_claiming_a_huge_length_ends_with_an_error_not_a_hang() {
        let mut v = pcap_header();
        v.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        v.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
        v.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
        v.extend(std::iter::repeat_n(0, 100));
        let (r, _) = read_all(v);
        assert!(r.is_err());
    }
}
