// `pullthrough hash-password`: the password from standard input, never the command line;
// the hash printed verifies it (and only it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { verifyPassword } from '../../core/auth/password.ts';

function run(input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['cli/main.ts', 'hash-password'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

test('hash-password prints a hash of the first line of standard input that verifies it', async () => {
  const { code, stdout, stderr } = await run('s3cret pass\n');
  assert.equal(code, 0, stderr);
  const hash = stdout.trim();
  assert.match(hash, /^pbkdf2-sha256\$100000\$/);
  assert.equal(await verifyPassword('s3cret pass', hash), true);
  assert.equal(await verifyPassword('s3cret pass\n', hash), false);
  assert.ok(!stdout.includes('s3cret') && !stderr.includes('s3cret'), 'the password is not echoed');
});

test('hash-password with nothing on standard input says so and exits 2', async () => {
  const { code, stderr } = await run('');
  assert.equal(code, 2);
  assert.match(stderr, /no password on standard input/);
});
