//! The batch the audit writer is writing, and where it stands: a write
//! that fails part-way (ENOSPC, EIO) leaves the bytes it wrote written and
//! the rest here, to be written before anything queued later, so that a
//! line interrupted by a full disk is finished, not left half written,
//! once there is room. Bytes are counted by their queued total, which is
//! also where a reopened file takes over.

use std::collections::VecDeque;
use std::io::{self, Write};

/// One batch of lines and the files it is written to.
#[derive(Debug)]
pub struct Outbox<W> {
    batch: Vec<u8>,
    /// The queued total at which `batch` begins.
    start: u64,
    /// How many bytes of `batch` are in a file.
    done: usize,
    /// Files to switch to, each with the queued total from which its
    /// lines go there.
    switches: VecDeque<(u64, W)>,
}

impl<W: Write> Default for Outbox<W> {
    fn default() -> Self {
        Outbox {
            batch: Vec::new(),
            start: 0,
            done: 0,
            switches: VecDeque::new(),
        }
    }
}

impl<W: Write> Outbox<W> {
    /// Whether every byte of the batch is in a file.
    pub fn is_written(&self) -> bool {
        self.done == self.batch.len()
    }

    /// The queued total written so far.
    pub fn written(&self) -> u64 {
        self.start + self.done as u64
    }

    /// Bytes of the batch not written yet.
    pub fn unwritten(&self) -> usize {
        self.batch.len() - self.done
    }

    /// Takes the lines in `pending` as the next batch, which begins where
    /// the last one ended, and the file switches queued with them; leaves
    /// `pending` empty. Only once the batch before is written.
    pub fn refill(&mut self, pending: &mut Vec<u8>, switches: &mut VecDeque<(u64, W)>) {
        assert!(self.is_written(), "a batch is written before the next");
        self.start += self.batch.len() as u64;
        self.batch.clear();
        std::mem::swap(&mut self.batch, pending);
        self.done = 0;
        self.switches.append(switches);
    }

    /// Writes the rest of the batch, switching to each file where its
    /// lines begin. On an error what was written stays written, and the
    /// rest is written by the next call.
    pub fn write(&mut self, file: &mut W) -> io::Result<()> {
        while !self.is_written() {
            let at = self.written();
            while self.switches.front().is_some_and(|(from, _)| *from <= at) {
                *file = self.switches.pop_front().expect("checked above").1;
            }
            let to = match self.switches.front() {
                Some((from, _)) => ((from - self.start) as usize).min(self.batch.len()),
                None => self.batch.len(),
            };
            self.write_until(file, to)?;
        }
        Ok(())
    }

    /// Writes the batch up to byte `to`, counting every byte written.
    fn write_until(&mut self, file: &mut W, to: usize) -> io::Result<()> {
        while self.done < to {
            match file.write(&self.batch[self.done..to]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A file on a file system with `room` bytes left: a write takes what
    /// fits, and with no room at all fails as ENOSPC does. Its bytes stay
    /// readable after the writer let go of it.
    #[derive(Debug, Default)]
    struct Disk {
        bytes: Rc<RefCell<Vec<u8>>>,
        room: Rc<RefCell<usize>>,
    }

    impl Disk {
        fn with_room(room: usize) -> Disk {
            let disk = Disk::default();
            *disk.room.borrow_mut() = room;
            disk
        }

        fn handle(&self) -> Disk {
            Disk {
                bytes: Rc::clone(&self.bytes),
                room: Rc::clone(&self.room),
            }
        }
    }

    impl Write for Disk {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut room = self.room.borrow_mut();
            if *room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = bytes.len().min(*room);
            self.bytes.borrow_mut().extend_from_slice(&bytes[..n]);
            *room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(range: std::ops::Range<u32>) -> Vec<u8> {
        range
            .flat_map(|n| format!("{{\"n\":{n}}}\n").into_bytes())
            .collect()
    }

    #[test]
    fn a_line_cut_by_a_full_disk_is_finished_before_newer_lines() {
        let disk = Disk::with_room(13);
        let mut file = disk.handle();
        let mut outbox = Outbox::default();
        outbox.refill(&mut lines(0..3), &mut VecDeque::new());
        assert!(outbox.write(&mut file).is_err());
        assert_eq!(outbox.written(), 13, "a line and a half");
        assert!(outbox.write(&mut file).is_err(), "still full");
        *disk.room.borrow_mut() = usize::MAX;
        outbox.write(&mut file).unwrap();
        outbox.refill(&mut lines(3..5), &mut VecDeque::new());
        outbox.write(&mut file).unwrap();
        assert_eq!(*disk.bytes.borrow(), lines(0..5));
        assert_eq!(outbox.written(), lines(0..5).len() as u64);
    }

    #[test]
    fn the_tail_of_a_failed_write_goes_to_the_file_its_lines_were_queued_for() {
        let (old, new) = (Disk::with_room(3), Disk::with_room(usize::MAX));
        let reopened_at = lines(0..2).len() as u64;
        let mut switches = VecDeque::from([(reopened_at, new.handle())]);
        let mut outbox = Outbox::default();
        outbox.refill(&mut lines(0..4), &mut switches);
        let mut file = old.handle();
        assert!(outbox.write(&mut file).is_err());
        *old.room.borrow_mut() = usize::MAX;
        outbox.write(&mut file).unwrap();
        assert_eq!(*old.bytes.borrow(), lines(0..2));
        assert_eq!(*new.bytes.borrow(), lines(2..4));
    }
}
