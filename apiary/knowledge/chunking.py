"""Sections into chunks with LangChain's RecursiveCharacterTextSplitter, spans kept.

Splitting happens inside a section, never across one, so every chunk keeps one page or
heading for its citation. The splitter's separators follow the format (Markdown splits at
headings, fences and paragraphs first); `add_start_index` gives each chunk's offset in its
section, which plus the section's offset is the span in the document's plain text.
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from apiary.knowledge.extract import ExtractedDocument


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str
    char_start: int
    char_end: int
    page: int | None
    section: str | None

    @property
    def indexed_text(self) -> str:
        """What is embedded and keyword-indexed: the heading path gives a chunk its context."""
        if self.section and not self.text.startswith(self.section):
            return f"{self.section}\n{self.text}"
        return self.text


def _splitter(fmt: str, chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    if fmt == "markdown":
        return RecursiveCharacterTextSplitter.from_language(
            Language.MARKDOWN,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            add_start_index=True,
        )
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        add_start_index=True,
        separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
    )


def split(document: ExtractedDocument, *, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    splitter = _splitter(document.format, chunk_size, chunk_overlap)
    chunks: list[Chunk] = []
    for section in document.sections:
        for piece in splitter.create_documents([section.text]):
            start = section.offset + int(piece.metadata["start_index"])
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=piece.page_content,
                    char_start=start,
                    char_end=start + len(piece.page_content),
                    page=section.page,
                    section=section.heading,
                )
            )
    return chunks
