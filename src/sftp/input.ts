// Reading stdin. On a pipe or socket (what sshd and every client give us) the kernel reads into
// one buffer that is reused for the whole session: a stream allocating a fresh 64 KiB chunk per
// read costs ten times the CPU of the transfer itself. Anything else (a file, /dev/null) falls
// back to the ordinary stream.
import net from "node:net";

const READ_BUFFER = 256 * 1024;

export interface Input {
  /** Each chunk is valid only during the call (the buffer is reused); return false to pause. */
  start(onChunk: (chunk: Buffer) => boolean, onEnd: () => void): void;
  resume(): void;
  close(): void;
}

export function stdinInput(): Input {
  let active: Input | undefined;
  return {
    // The socket is made here, so no chunk can arrive before there is someone to take it.
    start(onChunk, onEnd) {
      const buffer = Buffer.allocUnsafe(READ_BUFFER);
      let socket: net.Socket;
      try {
        // `onread` is accepted by the constructor since Node 12 but missing from @types/node's
        // SocketConstructorOpts; the intersection keeps everything else type-checked.
        const options: net.SocketConstructorOpts & { onread: net.OnReadOpts } = {
          fd: 0,
          readable: true,
          writable: false,
          allowHalfOpen: true, // never shut the socket down: with `sftp -D`, stdout is the same socket
          onread: { buffer, callback: (n: number) => onChunk(buffer.subarray(0, n)) },
        };
        socket = new net.Socket(options);
      } catch {
        active = streamInput(process.stdin);
        return active.start(onChunk, onEnd);
      }
      socket.once("end", onEnd);
      socket.once("error", onEnd);
      active = { start() {}, resume: () => socket.resume(), close: () => socket.destroy() };
    },
    resume: () => active?.resume(),
    close: () => active?.close(),
  };
}

function streamInput(stream: NodeJS.ReadStream): Input {
  return {
    start(onChunk, onEnd) {
      stream.on("data", (chunk: Buffer) => {
        if (!onChunk(chunk)) stream.pause();
      });
      stream.once("end", onEnd);
      stream.once("error", onEnd);
    },
    resume: () => stream.resume(),
    close: () => stream.destroy(),
  };
}
