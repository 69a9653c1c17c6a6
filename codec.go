package filestore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Record format, version 1. All integers are big-endian.
//
//	offset size field
//	0      4    magic "FSR\x00"
//	4      1    version (1)
//	5      1    flags (bit 0: payload is one zstd frame)
//	6      2    reserved, zero
//	8      8    generation: random, new on every write
//	16     8    expiry, Unix nanoseconds; 0 never expires
//	24     2    id length
//	26     4    stored payload length
//	30     4    decoded payload length (equals stored length when raw)
//	34     n    id
//	34+n   m    payload
//	end-4  4    CRC-32C (Castagnoli) of every byte before it
//
// The id is stored so that ForEach can return it and Load can tell a record
// that was copied or renamed to the wrong path. The checksum covers header,
// id and payload, so any flipped bit anywhere is ErrCorrupt. The generation
// identifies a version of a record: mtimes and inode numbers do not.
const (
	recordMagic   = "FSR\x00"
	recordVersion = 1
	headerSize    = 34
	trailerSize   = 4

	flagZstd   = 1 << 0
	knownFlags = flagZstd

	offVersion = 4
	offFlags   = 5
	offGen     = 8
	offExpiry  = 16
	offIDLen   = 24
	offStored  = 26
	offDecoded = 30

	// compressMin is the payload size below which compression is not even
	// tried: a zstd frame header costs more than it could save.
	compressMin = 64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// zstdMaxWindow bounds the decoder's window. Our encoder never uses more
// than its window for payloads up to maxMaxRecordSize.
const zstdMaxWindow = 8 << 20

// The encoder and decoder are shared by every Store: EncodeAll and
// DecodeAll are safe for concurrent use, and building either is costly.
var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithWindowSize(zstdMaxWindow),
			zstd.WithEncoderCRC(false)) // the record has its own checksum
		if err != nil {
			panic("filestore: zstd encoder: " + err.Error()) // only on invalid options
		}
		return e
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		// DecodeAll is capped by the capacity of the buffer we give it,
		// which is the decoded length the header declares, itself capped by
		// the store's MaxRecordSize. MaxMemory and MaxWindow bound what a
		// hostile frame can make the decoder allocate before that.
		d, err := zstd.NewReader(nil,
			zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(maxMaxRecordSize),
			zstd.WithDecoderMaxWindow(zstdMaxWindow),
			zstd.WithDecoderConcurrency(0))
		if err != nil {
			panic("filestore: zstd decoder: " + err.Error()) // only on invalid options
		}
		return d
	})
)

// encodeRecord builds the file content for one record, compressing data
// when compress is set and that saves bytes: encodeRecordIn with blocks of
// one byte.
func encodeRecord(id string, data []byte, expiry time.Time, gen uint64, compress bool) []byte {
	block := 0
	if compress {
		block = 1
	}
	return encodeRecordIn(id, data, expiryNanos(expiry), gen, block)
}

// encodeRecordIn builds the file content for one record expiring at exp
// (expiryNanos). With block > 0 it compresses data when that makes the
// record take fewer blocks of block bytes on disk; a file occupies whole
// blocks, so a compressed record that fills as many blocks as the plain one
// saves nothing and costs a decompression on every read.
func encodeRecordIn(id string, data []byte, exp int64, gen uint64, block int) []byte {
	payload, flags := data, byte(0)
	if block > 0 && len(data) >= compressMin {
		size := func(payload int) int { return (headerSize + len(id) + payload + trailerSize + block - 1) / block }
		// Compression cannot save a block unless the plain record fills
		// more than one.
		if size(len(data)) > 1 {
			z := zstdEncoder().EncodeAll(data, make([]byte, 0, len(data)))
			if size(len(z)) < size(len(data)) {
				payload, flags = z, flagZstd
			}
		}
	}
	buf := make([]byte, headerSize, headerSize+len(id)+len(payload)+trailerSize)
	copy(buf, recordMagic)
	buf[offVersion] = recordVersion
	buf[offFlags] = flags
	binary.BigEndian.PutUint64(buf[offGen:], gen)
	binary.BigEndian.PutUint64(buf[offExpiry:], uint64(exp))
	binary.BigEndian.PutUint16(buf[offIDLen:], uint16(len(id)))
	binary.BigEndian.PutUint32(buf[offStored:], uint32(len(payload)))
	binary.BigEndian.PutUint32(buf[offDecoded:], uint32(len(data)))
	buf = append(buf, id...)
	buf = append(buf, payload...)
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
}

// decoded is a record read back from disk.
type decoded struct {
	id     string
	data   []byte
	expiry int64 // Unix nanoseconds, 0 = never
	gen    uint64
	zstd   bool // the payload was stored compressed
}

// decodeRecord parses and verifies b. maxData caps the decoded payload.
// Every malformed input returns an error wrapping ErrCorrupt (and also
// ErrTooLarge for a payload above maxData); it never panics. The returned data does not
// alias b unless it was stored raw, in which case it is a subslice of b.
func decodeRecord(b []byte, maxData int) (decoded, error) {
	return decodeRecordOf(b, maxData, "")
}

// decodeRecordOf is decodeRecord for a reader that expects the id want (or
// any id, if want is empty). A record that holds want shares want's string
// instead of allocating its own: one allocation less for every Load.
func decodeRecordOf(b []byte, maxData int, want string) (decoded, error) {
	var r decoded
	if len(b) < headerSize+trailerSize {
		return r, fmt.Errorf("%w: %d bytes is shorter than a header", ErrCorrupt, len(b))
	}
	if string(b[:4]) != recordMagic {
		return r, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	if v := b[offVersion]; v != recordVersion {
		return r, fmt.Errorf("%w: unsupported record version %d", ErrCorrupt, v)
	}
	flags := b[offFlags]
	if flags&^knownFlags != 0 {
		return r, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	if b[6] != 0 || b[7] != 0 {
		return r, fmt.Errorf("%w: reserved bytes set", ErrCorrupt)
	}
	idLen := int(binary.BigEndian.Uint16(b[offIDLen:]))
	stored := int64(binary.BigEndian.Uint32(b[offStored:]))
	decodedLen := int64(binary.BigEndian.Uint32(b[offDecoded:]))
	if want := int64(headerSize+idLen+trailerSize) + stored; int64(len(b)) != want {
		return r, fmt.Errorf("%w: length fields say %d bytes, file has %d", ErrCorrupt, want, len(b))
	}
	body := b[:len(b)-trailerSize]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(b[len(body):]); got != want {
		return r, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	// Past the checksum the fields are what the writer wrote, but a writer
	// with different limits, or a forged record, still gets checked.
	r.gen = binary.BigEndian.Uint64(b[offGen:])
	r.expiry = int64(binary.BigEndian.Uint64(b[offExpiry:]))
	if r.expiry < 0 {
		return r, fmt.Errorf("%w: negative expiry", ErrCorrupt)
	}
	if idLen == 0 || idLen > MaxIDLength {
		return r, fmt.Errorf("%w: id length %d", ErrCorrupt, idLen)
	}
	if decodedLen > int64(maxData) {
		return r, fmt.Errorf("%w: %w: payload of %d bytes exceeds the limit of %d", ErrCorrupt, ErrTooLarge, decodedLen, maxData)
	}
	if id := b[headerSize : headerSize+idLen]; want != "" && string(id) == want {
		r.id = want
	} else {
		r.id = string(id)
	}
	payload := body[headerSize+idLen:]
	if flags&flagZstd == 0 {
		if int64(len(payload)) != decodedLen {
			return r, fmt.Errorf("%w: raw payload length mismatch", ErrCorrupt)
		}
		r.data = payload
		return r, nil
	}
	out, err := zstdDecoder().DecodeAll(payload, make([]byte, 0, decodedLen))
	if err != nil {
		return r, fmt.Errorf("%w: zstd: %w", ErrCorrupt, err)
	}
	if int64(len(out)) != decodedLen {
		return r, fmt.Errorf("%w: zstd payload decoded to %d bytes, header says %d", ErrCorrupt, len(out), decodedLen)
	}
	r.data, r.zstd = out, true
	return r, nil
}

// expiryNanos converts an expiry to the header's form: 0 for never, and
// otherwise Unix nanoseconds clamped to [1, MaxInt64], so that an expiry at
// or before 1970 is stored as already expired instead of as "never".
func expiryNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if t.Before(time.Unix(0, 1)) {
		return 1
	}
	if t.After(time.Unix(0, math.MaxInt64)) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

// expiryTime is the inverse of expiryNanos.
func expiryTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// expired reports whether a record with expiry n is expired at now. A
// record expires at its expiry instant, not after it.
func expired(n int64, now time.Time) bool {
	return n != 0 && now.UnixNano() >= n
}
