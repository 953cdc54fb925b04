// The Node half of the reader panel (tests/readers.rs): how widely used Node mail parsers
// read a From header. Input: JSON lines {"id": N, "value": "..."} on stdin. Output: one JSON
// line per input and reader: {"id", "reader", "mailboxes": [{"name", "address"}], "error"}.
import { createInterface } from 'node:readline';
import mailparser from 'mailparser';
import PostalMime from 'postal-mime';
import addrs from 'email-addresses';

const flatten = (list) => {
    const out = [];
    for (const a of list || []) {
        if (a && Array.isArray(a.group)) out.push(...flatten(a.group));
        else if (a && Array.isArray(a.addresses)) out.push(...flatten(a.addresses));
        else if (a) out.push({ name: a.name || '', address: a.address || '' });
    }
    return out;
};

const readers = {
    // nodemailer's addressparser with libmime decoding, as mailparser's simpleParser gives it.
    mailparser: async (raw) => {
        const parsed = await mailparser.simpleParser(raw);
        return flatten(parsed.from ? parsed.from.value : []);
    },
    'postal-mime': async (raw) => {
        const email = await PostalMime.parse(raw);
        return flatten(email.from ? [email.from] : []);
    },
    'email-addresses': async (raw, value) => {
        const list = addrs.parseFrom(value.replace(/\r?\n(?=[ \t])/g, ''));
        return flatten(list || []);
    },
};

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
    if (!line.trim()) continue;
    const { id, value } = JSON.parse(line);
    const raw = `From: ${value}\r\nTo: friend@example.org\r\nSubject: x\r\n\r\nbody\r\n`;
    for (const [reader, read] of Object.entries(readers)) {
        let result;
        try {
            result = { id, reader, mailboxes: await read(raw, value), error: null };
        } catch (e) {
            result = { id, reader, mailboxes: [], error: String(e) };
        }
        process.stdout.write(JSON.stringify(result) + '\n');
    }
}
