// The client addresses of each key, for the review: which ones are new (an anomaly) and which to
// show. A key without from= can connect from as many addresses as it likes, so everything here is
// bounded: at most KNOWN_CAP addresses remembered, NAMED_NEW new ones named (the rest summarised
// per key), LISTED per key shown in the table. Every step is O(1): the review stays linear.

/** New client addresses named one by one in a review; the others are counted per key. */
export const NAMED_NEW = 200;
/** Addresses remembered in all keys (about 100 bytes each); past it new ones are not told apart. */
export const KNOWN_CAP = 200_000;
/** Addresses shown per key in the sessions table. */
export const LISTED = 10;

interface PerKey {
  /** address -> seen within the window (--since). */
  known: Map<string, boolean>;
  /** Distinct addresses within the window. */
  count: number;
  listed: string[];
  unnamed?: { count: number; first: string; last: string };
}

export interface NewClients {
  label: string;
  count: number;
  first: string;
  last: string;
}

export class Clients {
  private keys = new Map<string, PerKey>();
  private remembered = 0;
  private named = 0;
  /** Lines from addresses that came after KNOWN_CAP was reached (not remembered, not judged). */
  untracked = 0;

  private of(label: string): PerKey {
    let k = this.keys.get(label);
    if (!k) this.keys.set(label, (k = { known: new Map(), count: 0, listed: [] }));
    return k;
  }

  /**
   * One line of `label` from `client`. Returns the detail of a new-client anomaly to name, if any;
   * new clients past NAMED_NEW are only counted (see unnamed()).
   */
  see(label: string, client: string, time: string, inWindow: boolean): string | undefined {
    const k = this.of(label);
    const seen = k.known.get(client);
    if (seen === undefined && this.remembered >= KNOWN_CAP) {
      this.untracked++;
      return undefined;
    }
    if (inWindow && seen !== true) {
      k.count++;
      if (k.listed.length < LISTED) k.listed.push(client);
    }
    if (seen !== undefined) {
      if (inWindow && !seen) k.known.set(client, true);
      return undefined;
    }
    const earlier = k.known.size;
    const examples = [...take(k.known.keys(), 3)];
    k.known.set(client, inWindow);
    this.remembered++;
    if (earlier === 0 || !inWindow) return undefined;
    if (this.named < NAMED_NEW) {
      this.named++;
      const more = earlier > examples.length ? ` and ${earlier - examples.length} more` : "";
      return `first session from ${client} (known: ${examples.join(", ")}${more})`;
    }
    const u = (k.unnamed ??= { count: 0, first: time, last: time });
    u.count++;
    u.last = time;
    return undefined;
  }

  /** Addresses of `label` within the window: how many, and the first LISTED of them. */
  listed(label: string): { clients: string[]; clientCount: number } {
    const k = this.keys.get(label);
    return { clients: k ? k.listed : [], clientCount: k ? k.count : 0 };
  }

  /** New clients not named, per key. */
  unnamed(): NewClients[] {
    return [...this.keys].flatMap(([label, k]) => (k.unnamed ? [{ label, ...k.unnamed }] : []));
  }
}

function* take<T>(it: Iterator<T>, n: number): Generator<T> {
  for (let i = 0; i < n; i++) {
    const r = it.next();
    if (r.done) return;
    yield r.value;
  }
}
