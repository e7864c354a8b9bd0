// Real container clients pointed at a pullthrough mirror: skopeo, podman (root, vfs) and
// containerd's ctr (a private containerd with its own root, state and socket).
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, writeFile, rm, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stopProcess, until } from './process.ts';
import { digestOf } from '../../core/oci/digest.ts';

const run = promisify(execFile);

/**
 * `skopeo copy` from the mirror into a `dir:` layout, which keeps manifests byte for byte
 * (an `oci:` layout would convert Docker schema 2); returns the top manifest's digest.
 */
export async function skopeoPull(mirrorHost: string, image: string, dest: string, all = false): Promise<string> {
  await mkdir(dest, { recursive: true });
  await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', ...(all ? ['--all'] : []), `docker://${mirrorHost}/${image}`, `dir:${dest}`]);
  return digestOf(await readFile(join(dest, 'manifest.json')));
}

export interface Podman {
  /**
   * Pulls `docker.io/<image>` (through the mirror), or `<registry>/<image>`; returns the
   * pulled manifest's digest. `args`: more `podman pull` flags (`--creds u:p`, which
   * podman sends to the registry named, not to its mirrors).
   */
  pull(image: string, args?: string[], registry?: string): Promise<string>;
  /** `podman login` to the mirror, the password on standard input; its own auth file. */
  login(user: string, password: string): Promise<void>;
  remove(): Promise<void>;
}

/** podman as root with the vfs driver and a registries.conf whose docker.io mirror is ours. */
export async function podmanWithMirror(mirrorHost: string): Promise<Podman> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-podman-'));
  await writeFile(
    join(dir, 'registries.conf'),
    `unqualified-search-registries = ["docker.io"]\n[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "${mirrorHost}"\ninsecure = true\n`,
  );
  await writeFile(join(dir, 'storage.conf'), `[storage]\ndriver = "vfs"\nrunroot = "${dir}/run"\ngraphroot = "${dir}/graph"\n`);
  await writeFile(join(dir, 'containers.conf'), `[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nevents_logfile_path = "${dir}/events.log"\n`);
  const env = {
    ...process.env,
    CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'),
    CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
    CONTAINERS_CONF: join(dir, 'containers.conf'),
    XDG_RUNTIME_DIR: join(dir, 'xdg'),
    REGISTRY_AUTH_FILE: join(dir, 'auth.json'),
  };
  await mkdir(env.XDG_RUNTIME_DIR, { recursive: true });
  await writeFile(env.REGISTRY_AUTH_FILE, '{"auths":{}}\n');
  const podman = (...args: string[]) => run('podman', args, { env, maxBuffer: 16 * 1024 * 1024 });
  return {
    async login(user, password) {
      await new Promise<void>((resolve, reject) => {
        const child = spawn('podman', ['login', '--tls-verify=false', '--username', user, '--password-stdin', mirrorHost], { env, stdio: ['pipe', 'pipe', 'pipe'] });
        let err = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
        child.stdout.resume();
        child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`podman login exited ${code}: ${err}`))));
        child.stdin.end(password);
      });
    },
    async pull(image, args = [], registry = 'docker.io') {
      await podman('pull', '--quiet', ...args, `${registry}/${image}`);
      const { stdout } = await podman('image', 'inspect', '--format', '{{.Digest}}', `${registry}/${image}`);
      return stdout.trim();
    },
    async remove() {
      await podman('system', 'reset', '--force').catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface Containerd {
  /** `ctr images pull` of `docker.io/<image>` through the mirror; returns the image's digest. `args`: more flags (`--user u:p`). */
  pull(image: string, allPlatforms?: boolean, args?: string[]): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A private containerd (CRI disabled, root/state/socket in a temp dir) and ctr pulling
 * through a hosts.toml whose docker.io mirror is ours; containerd adds `?ns=docker.io`.
 */
export async function containerdWithMirror(mirrorHost: string, options: { authorization?: string } = {}): Promise<Containerd> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-containerd-'));
  const socket = join(dir, 'containerd.sock');
  await writeFile(
    join(dir, 'config.toml'),
    [
      'version = 2',
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${socket}"`,
      '[ttrpc]',
      `  address = "${dir}/containerd.ttrpc.sock"`,
      '[debug]',
      `  address = "${dir}/debug.sock"`,
      '',
    ].join('\n'),
  );
  await mkdir(join(dir, 'hosts', 'docker.io'), { recursive: true });
  // The mirror is tried first; `server` points at it too so nothing falls back to the internet.
  await writeFile(
    join(dir, 'hosts', 'docker.io', 'hosts.toml'),
    `server = "http://${mirrorHost}"\n\n[host."http://${mirrorHost}"]\n  capabilities = ["pull", "resolve"]\n` +
      (options.authorization ? `  [host."http://${mirrorHost}".header]\n    Authorization = "${options.authorization}"\n` : ''),
  );
  const child = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
  const ctr = (...args: string[]) => run('ctr', ['--address', socket, ...args], { maxBuffer: 16 * 1024 * 1024 });
  const ready = async () => {
    if (child.exitCode !== null) throw new Error(`containerd exited ${child.exitCode}: ${log}`);
    return access(socket).then(
      () => ctr('version').then(() => true, () => false),
      () => false,
    );
  };
  await until(ready, 30_000, 'containerd to answer');
  return {
    async pull(image, allPlatforms = false, args = []) {
      const ref = `docker.io/${image}`;
      await ctr('images', 'pull', '--hosts-dir', join(dir, 'hosts'), '--snapshotter', 'native', ...(allPlatforms ? ['--all-platforms'] : []), ...args, ref);
      const { stdout } = await ctr('images', 'ls');
      const line = stdout.split('\n').find((l) => l.startsWith(`${ref} `));
      const digest = line?.split(/\s+/).find((f) => f.startsWith('sha256:'));
      if (!digest) throw new Error(`ctr lists no digest for ${ref}:\n${stdout}`);
      return digest;
    },
    async stop() {
      await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
