// Reading stdin. On a pipe or socket (what sshd and every client give us) the kernel reads
// straight into the framer's buffer, where the packets are then handled in place: a stream
// allocating a fresh chunk per read, and copying packets out of it, costs more CPU than the
// transfer itself. Anything else (a file, /dev/null) falls back to the ordinary stream.
import net from "node:net";

/** Where the bytes go: the framer (wire.ts). */
export interface Sink {
  space(): Buffer;
  filled(n: number): void;
  push(chunk: Buffer): void;
}

export interface Input {
  /** onData runs after each read of n bytes, once they are in the sink; it returns false to pause. */
  start(sink: Sink, onData: (n: number) => boolean, onEnd: () => void): void;
  resume(): void;
  close(): void;
}

export function stdinInput(): Input {
  let active: Input | undefined;
  return {
    // The socket is made here, so no bytes can arrive before there is somewhere to put them.
    start(sink, onData, onEnd) {
      let socket: net.Socket;
      try {
        // `onread` is accepted by the constructor since Node 12 but missing from @types/node's
        // SocketConstructorOpts; the intersection keeps everything else type-checked. Node asks
        // for a buffer before every read, so each read lands where the framer wants it.
        const options: net.SocketConstructorOpts & { onread: net.OnReadOpts } = {
          fd: 0,
          readable: true,
          writable: false,
          allowHalfOpen: true, // never shut the socket down: with `sftp -D`, stdout is the same socket
          onread: {
            buffer: () => sink.space(),
            callback: (n: number) => {
              sink.filled(n);
              return onData(n);
            },
          },
        };
        socket = new net.Socket(options);
      } catch {
        active = streamInput(process.stdin);
        return active.start(sink, onData, onEnd);
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
    start(sink, onData, onEnd) {
      stream.on("data", (chunk: Buffer) => {
        sink.push(chunk);
        if (!onData(chunk.length)) stream.pause();
      });
      stream.once("end", onEnd);
      stream.once("error", onEnd);
    },
    resume: () => stream.resume(),
    close: () => stream.destroy(),
  };
}
