// Reusable buffers for DATA replies. A fresh 255 KiB buffer per READ costs more CPU in allocation,
// page faults and garbage collection than the read itself; these go back to the pool once the
// reply built on them has been written out.
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly ours = new WeakSet<ArrayBuffer>();
  private readonly out = new Set<ArrayBuffer>();

  constructor(
    readonly size: number,
    /** How many idle buffers to keep; more are left to the garbage collector. */
    private readonly keep: number,
  ) {}

  take(): Buffer {
    const b = this.free.pop() ?? this.fresh();
    this.out.add(b.buffer as ArrayBuffer);
    return b;
  }

  private fresh(): Buffer {
    const b = Buffer.allocUnsafeSlow(this.size); // its own ArrayBuffer, which identifies it
    this.ours.add(b.buffer as ArrayBuffer);
    return b;
  }

  /** Give back a buffer taken from the pool (or any view of it); anything else is ignored. */
  release(view: Buffer): void {
    const ab = view.buffer as ArrayBuffer;
    if (!this.ours.has(ab) || !this.out.delete(ab)) return; // not ours, or already back
    if (this.free.length < this.keep) this.free.push(Buffer.from(ab, 0, this.size));
  }
}
